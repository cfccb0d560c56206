"""LeDex data collection (LEDEX.md §1):
`python scripts/collect.py --config=configs/collect.py:VARIANT --workdir=DIR [--config.x=y]`.

Variants:
  demo         the embedded SmolLM2 as model and teacher on the bundled demo problems; minutes on 2 cores
  mbpp_self    self-bootstrap on MBPP train (the model is its own teacher)
  mbpp_openai  MBPP train, a teacher at an OpenAI-compatible endpoint (config.teacher.base_url)
  apps_openai  APPS train, the same teacher
  codellama_7b / codellama_13b / starcoder_15b   paper scale: MBPP + APPS + CodeContests train,
               20 samples at T=1.0, 10 teacher answers at T=0.8 (teacher: GPT-3.5 by default)
Paper values: 20 initial samples per problem at temperature 1.0 with a 3-shot prompt (MBPP task
ids 2-4); 10 explanations + refinements per wrong solution at temperature 0.8.
"""
from ml_collections import ConfigDict

PAPER_MODELS = {
    "codellama_7b": "codellama/CodeLlama-7b-hf",
    "codellama_13b": "codellama/CodeLlama-13b-hf",
    "starcoder_15b": "bigcode/starcoder",
}
VARIANTS = ("demo", "mbpp_self", "mbpp_openai", "apps_openai") + tuple(PAPER_MODELS)


def get_config(arg: str | None = None) -> ConfigDict:
    variant = arg or "demo"
    if variant not in VARIANTS:
        raise ValueError(f"configs/collect.py: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    c = ConfigDict()
    c.variant = variant
    c.seed = 0

    c.model = ConfigDict()
    c.model.checkpoint = "embedded:smollm2"  # HF dir / hub name / .gguf / trainer workdir / embedded:smollm2
    c.model.tokenizer = ""  # "" = the checkpoint's
    c.model.dtype = ""  # "" = float32 (bfloat16 on accelerators for 7B+)

    c.data = ConfigDict()
    c.data.datasets = "demo"  # comma-separated: demo, mbpp, apps, codecontests
    c.data.demo_path = ""  # "" = the bundled ledex_jax/data/demo/sft_demo_problems.jsonl
    c.data.mbpp_path = ""  # mbpp.jsonl (train split = task_id 601-974)
    c.data.apps_path = ""  # "" = hub codeparrot/apps
    c.data.codecontests_path = ""  # "" = hub deepmind/code_contests
    c.data.max_problems = -1  # per dataset: the first N (-1 = all)
    c.data.few_shot = 0  # code-generation examples in the sampling prompt (MBPP: task ids 2-4)

    c.prompt = ConfigDict()
    c.prompt.style = "chat_template"  # chat_template (instruct models) | starchat (base models)

    c.sample = ConfigDict()
    c.sample.n = 20
    c.sample.temperature = 1.0
    c.sample.top_p = 1.0
    c.sample.max_new_tokens = 512
    c.sample.max_prompt_len = 2048
    c.sample.max_batch = 64  # rows per device call
    c.sample.problems_per_chunk = 8  # unit of work, of resume and of sharding across processes
    c.sample.mesh_shape = (1, -1, 1)  # (data, fsdp, tensor) over this host's devices; each host samples alone

    c.execute = ConfigDict()
    c.execute.workers = 0  # 0 = one per CPU
    c.execute.per_test_timeout = 3.0
    c.execute.allow_unsandboxed = False

    c.teacher = ConfigDict()
    c.teacher.kind = "self"  # self | hf:PATH | gguf:PATH | openai:MODEL
    c.teacher.n = 10
    c.teacher.temperature = 0.8
    c.teacher.top_p = 1.0
    c.teacher.max_new_tokens = 768
    c.teacher.max_prompt_len = 3072
    c.teacher.style = ""  # for hf:/gguf: teachers; "" = config.prompt.style
    c.teacher.few_shot = 0  # explain+refine examples (from the bundled demo set) before each request
    c.teacher.base_url = ""  # openai: the endpoint ("" = api.openai.com)
    c.teacher.api_key_env = "OPENAI_API_KEY"  # openai: the variable holding the key ("" = none needed)
    c.teacher.max_concurrency = 8
    c.teacher.timeout = 120.0
    c.teacher.max_retries = 6

    c.export = ConfigDict()
    c.export.tfds = True  # also prepare DIR/tfds (TFDS builder "ledex_sft")

    c.distributed = ConfigDict()  # the same command on every host: each takes its own chunks
    c.distributed.initialize = False
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1

    if variant == "demo":
        c.sample.n = 4
        c.sample.max_new_tokens = 256
        c.sample.max_prompt_len = 512
        c.sample.problems_per_chunk = 4
        c.sample.max_batch = 16  # few rows per call on 2 cores: padding to 64 would cost 4x
        c.teacher.n = 2
        c.teacher.max_new_tokens = 384
        c.teacher.max_prompt_len = 1024
    elif variant in ("mbpp_self", "mbpp_openai", "apps_openai"):
        c.data.datasets = "apps" if variant == "apps_openai" else "mbpp"
        c.data.few_shot = 3 if variant != "apps_openai" else 0
        if variant != "mbpp_self":
            c.teacher.kind = "openai:gpt-3.5-turbo"
    else:
        c.model.checkpoint = PAPER_MODELS[variant]
        c.model.dtype = "bfloat16"
        c.prompt.style = "starchat"  # base models
        c.data.datasets = "mbpp,apps,codecontests"
        c.teacher.kind = "openai:gpt-3.5-turbo"
    return c

