"""A JAX model answering chat requests through the KV-cache `Sampler`: the policy when it samples
initial solutions, and the `self` / `hf:` / `gguf:` teachers.

Each request's prompt is prefilled once for its n answers (`Sampler.generate(n=...)`), and
requests that begin alike (a problem's refinement prompts) share the prefill of their common
start (`shared_prefix` tokens or more, `sampling/prefix.py`). Answer j of a request seeded s
draws from random stream `key_seed(s, j)`, so an item's answers do not depend on the batch it
shares.
"""
from __future__ import annotations

from collections.abc import Sequence

from ledex_jax.collect.teacher_api import TeacherReply, TeacherRequest, key_seed
from ledex_jax.data import prompts


class SamplerTeacher:
    """Chat requests -> answers with a local model (one `Sampler`, shared by all calls)."""

    def __init__(self, model, tokenizer, *, name: str, style: str = "chat_template",
                 max_prompt_len: int = 2048, max_batch: int | None = 64, mesh=None, shared_prefix: int = 32):
        from ledex_jax.sampling import Sampler

        if style == "chat_template":
            prompts.require_template(tokenizer)
        self.name, self.style, self.tokenizer = name, style, tokenizer
        self.max_prompt_len = max_prompt_len
        self.sampler = Sampler(model, tokenizer, max_prompt_len=max_prompt_len, max_batch=max_batch, mesh=mesh,
                               shared_prefix=shared_prefix)
        self.context = model.config.max_position_embeddings

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = prompts.prompt_from_turns(messages, self.style, self.tokenizer)
        return prompts.encode_prompt(self.tokenizer, text, self.style)

    def answer(self, requests: Sequence[TeacherRequest], progress: bool = False) -> list[TeacherReply]:
        replies: list[TeacherReply | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}
        for i, req in enumerate(requests):
            ids = self.prompt_ids(req.messages)
            limit = min(self.max_prompt_len, self.context - req.max_tokens)
            if len(ids) > limit:
                why = (f"prompt of {len(ids)} tokens is longer than this teacher takes ({limit}: "
                       f"max_prompt_len {self.max_prompt_len}, context {self.context} minus "
                       f"max_tokens {req.max_tokens})")
                replies[i] = TeacherReply([""] * req.n, [why] * req.n)
                continue
            knobs = (req.n, float(req.temperature), float(req.top_p), int(req.max_tokens))
            groups.setdefault(knobs, []).append((i, ids))
        stop = [prompts.END] if self.style == "starchat" else []
        for (n, temperature, top_p, max_tokens), members in groups.items():
            rows = [key_seed(requests[i].seed, j) for i, _ in members for j in range(n)]
            out = self.sampler.generate([ids for _, ids in members], max_tokens, temperature=temperature,
                                        top_p=top_p, stop=stop, n=n, row_ids=rows, progress=progress)
            for m, (i, ids) in enumerate(members):
                texts = out.texts[m * n:(m + 1) * n]
                used = int(out.lengths[m * n:(m + 1) * n].sum())
                replies[i] = TeacherReply(list(texts), [""] * n, prompt_tokens=len(ids), completion_tokens=used)
        return replies  # type: ignore[return-value]

    def close(self) -> None:
        pass
