"""scripts/check_parity.py on a tiny random Llama saved with a character tokenizer: passes at
the default tolerance, fails (exit 1) when the tolerance is below float32 noise."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_parity.py"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                         bos_token_id=1, eos_token_id=2, initializer_range=0.3))
    model.save_pretrained(str(path))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "\n": 4, **{chr(c): c - 27 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>").save_pretrained(str(path))
    return path


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_passes_and_reports(tiny_dir):
    result = _run(f"--hf_dir={tiny_dir}", "--max_new_tokens=12", "--prompts=def f(x):\n", "--prompts=x = 1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max |logit difference| over real tokens:" in result.stdout
    assert result.stdout.count(": agree") == 2 and "PARITY OK" in result.stdout


def test_fails_past_tolerance(tiny_dir):
    result = _run(f"--hf_dir={tiny_dir}", "--max_new_tokens=4", "--tolerance=1e-12")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PARITY FAILED" in result.stdout


def test_needs_exactly_one_checkpoint():
    result = _run()
    assert result.returncode != 0 and "exactly one of --hf_dir and --gguf" in result.stderr
