"""PPO with LeDex's rewards (LEDEX.md §3): `python scripts/train.py --config=configs/rl.py:VARIANT`.

Variants: smollm2 (default: the embedded SmolLM2-135M-Instruct on the bundled demo problems,
references from the demo SFT set; a few steps run on a 2-core CPU), tiny (random tiny Llama,
tests), codellama_7b, codellama_13b, starcoder_15b (paper values: batch 64, lr 2e-6, FSDP, bf16;
`model.checkpoint` should name your SFT checkpoint and `data.rl_path` your collection).

What the paper leaves out follows TRL v0.8.6's PPOConfig (what LeDex ran): 4 PPO epochs, clip
0.2, value clip 0.2, vf_coef 0.1, adaptive KL from 0.2 (target 6, horizon 10000), ratio
threshold 10, no reward whitening, whitened advantages. The paper's GAE is γ = 0.99, λ = 1
(TRL's default λ is 0.95: --config.ppo.lam=0.95).

Minibatch: the whole rollout batch (64) by default. TRL 0.8.6's default mini_batch_size is 128,
larger than the paper's batch of 64, so each PPO epoch was one update over all 64 responses;
4 epochs = 4 updates per step. Memory is bounded by train.grad_accum_steps (micro-batches of one
update) and ppo.forward_batch_size (rows per rescoring forward), not by the minibatch.
"""
from ml_collections import ConfigDict

from ledex_jax.training.config import variant_config


def get_config(arg: str | None = None) -> ConfigDict:
    c = variant_config("ppo", arg, "configs/rl.py")
    variant = c.variant

    c.data = ConfigDict()
    c.data.source = "collected"  # "collected" (a collection's rl.jsonl) | "demo_sft" (an SFT JSONL grouped by wrong code)
    c.data.rl_path = ""  # collection directory or its rl.jsonl (scripts/collect.py)
    c.data.sft_path = ""  # demo_sft: "" = the bundled ledex_jax/data/demo/sft_demo.jsonl
    c.data.demo_path = ""  # tests of demo problems ("" = bundled sft_demo_problems.jsonl)
    c.data.mbpp_path = ""  # mbpp.jsonl, for rows of dataset "mbpp"
    c.data.apps_path = ""  # "" = hub codeparrot/apps
    c.data.codecontests_path = ""  # "" = hub deepmind/code_contests
    c.data.style = "starchat"  # prompt style: "starchat" (base models, LEDEX.md §2) | "chat_template"

    c.rollout = ConfigDict()
    c.rollout.mode = "online"  # "online": sample from the policy | "offline": score the collected trajectories
    c.rollout.formats = "refine,explain_refine"  # row i of the data stream asks for formats[i % len]
    c.rollout.max_prompt_len = 1536  # longer prompts are skipped at load time and counted (rl_data_report.json)
    c.rollout.max_new_tokens = 512
    c.rollout.temperature = 1.0  # TRL samples at 1.0, top_k 0, top_p 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.max_batch = 0  # sampler rows per device call (0 = the whole batch)
    # Padded prompt widths, e.g. "256,512,1024": each width compiles its own rescoring and train
    # programs. "" = one width, max_prompt_len (one compilation; MaxText/Tunix pad the same way).
    c.rollout.prompt_buckets = ""
    # Several hosts: each host samples and scores its own rows on a replica of the policy over
    # its local devices, laid out as this (data, fsdp, tensor) mesh. One host samples on c.mesh.
    c.rollout.mesh_shape = (1, -1, 1)

    c.ppo = ConfigDict()
    c.ppo.epochs = 4
    c.ppo.minibatch_size = 64  # see the module docstring
    c.ppo.cliprange = 0.2
    c.ppo.cliprange_value = 0.2
    c.ppo.vf_coef = 0.1
    c.ppo.gamma = 0.99  # the paper's GAE
    c.ppo.lam = 1.0
    c.ppo.kl_penalty = "kl"  # per-token KL estimator: kl | abs | mse | full
    c.ppo.kl_control = "adaptive"  # adaptive (Ziegler et al.) | fixed
    c.ppo.init_kl_coef = 0.2
    c.ppo.target_kl = 6.0
    c.ppo.kl_horizon = 10000
    c.ppo.ratio_threshold = 10.0  # skip a minibatch whose mean ratio exceeds this
    c.ppo.whiten_rewards = False
    c.ppo.whiten_advantages = True
    c.ppo.forward_batch_size = 0  # rows per rescoring forward (0 = the whole batch)
    # Rescoring and training micro-batches group rows of similar prompt length and drop the
    # prompt columns all their rows pad, down to one of the sampler's bucket widths (each width
    # its own program). False: every micro-batch at the rollout's full prompt width (one program).
    c.ppo.trim_prompts = True
    c.ppo.reference_dtype = ""  # frozen reference copy's dtype ("" = as the policy's params, e.g. "bfloat16")
    c.ppo.log_entropy = True  # entropy metric (one more LM-head product per rescoring)
    c.ppo.value_head_std = 1e-3  # value head init: small weights, zero bias

    c.rewards = ConfigDict()
    c.rewards.embedder = "offline:minilm"  # S_ex embedder: offline:minilm | hashing | a sentence-transformers dir / hub name
    c.rewards.clip_explanation_reward = True  # our choice: R(e) in [-5, 5] like R(r)
    c.rewards.echo_penalty = 0.0  # subtracted from R(r) when the response echoes the wrong code (not in the paper)

    c.execute = ConfigDict()
    c.execute.workers = 0  # 0 = CPU count
    c.execute.per_test_timeout = 5.0
    c.execute.memory_mb = 1024
    c.execute.sandbox = "auto"
    c.execute.allow_unsandboxed = False  # rewards from unsandboxed runs can be forged: refused unless True

    c.train.num_epochs = 1  # passes over the RL rows (when num_steps = -1)
    c.train.batch_size = 64
    c.train.learning_rate = 2e-6
    c.train.schedule = "constant"  # TRL's PPO: a constant learning rate
    c.train.warmup_steps = 0
    c.train.max_grad_norm = 1e9  # TRL 0.8.6: max_grad_norm None (no clipping)
    c.checkpoint.every_steps = 20
    c.log.every_steps = 1

    if variant == "tiny":
        c.model.overrides = {"hidden_size": 64, "num_layers": 2, "max_position_embeddings": 512}
        c.data.source = "demo_sft"
        c.rollout.max_prompt_len = 320
        c.rollout.max_new_tokens = 24
        c.rewards.embedder = "hashing"
        c.train.batch_size = 8
        c.ppo.minibatch_size = 8
        c.ppo.epochs = 2
        c.train.learning_rate = 1e-4
        c.execute.workers = 2
        c.checkpoint.every_steps = 2
    elif variant == "smollm2":
        c.data.source = "demo_sft"
        c.data.style = "chat_template"  # an instruct model: its own chat template
        # No remat (as TRL): micro-batches of 4 rows bound the train step's activations (~6 GB here)
        c.model.overrides = {"remat_policy": "none"}
        c.train.grad_accum_steps = 2
        c.rollout.max_prompt_len = 288  # the demo's longest prompt is 277 tokens
        c.rollout.max_new_tokens = 128
        c.train.batch_size = 8
        c.ppo.minibatch_size = 8
        c.train.num_steps = 3
        c.train.learning_rate = 1e-5
        c.execute.workers = 2
        c.checkpoint.every_steps = 3
    else:  # 7-15B: FSDP across the slice, bf16 compute, full remat; the reference kept in bf16
        c.model.overrides = {"dtype": "bfloat16", "remat_policy": "full"}
        c.ppo.reference_dtype = "bfloat16"
        c.ppo.forward_batch_size = 16
        c.train.grad_accum_steps = 4
        c.mesh.shape = (1, -1, 1)
    return c
