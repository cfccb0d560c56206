"""Supervised fine-tuning (LeDex §2): answer-only loss over refine / explain+refine / codegen data."""
