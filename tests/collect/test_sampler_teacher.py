"""The local-model teacher: answers per request in order, n answers from one prefill each, the
same answers alone or batched with others, and on a mesh of this host's devices (8 virtual
CPU devices here) the same answers as on one device."""
import jax
import pytest

from ledex_jax.collect.sampler_teacher import SamplerTeacher
from ledex_jax.collect.teacher_api import TeacherRequest


def request(key, content, n=2, temperature=0.8, max_tokens=12):
    return TeacherRequest(key=key, messages=[{"role": "user", "content": content}], n=n,
                          temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=hash(key) & 0xFFFF)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ledex_jax.models.sources import load_model_and_tokenizer
    model, _, tok = load_model_and_tokenizer(str(tiny_model_dir))
    return model, tok


def test_answers_do_not_depend_on_the_batch_and_match_across_a_mesh(tiny, tiny_model_dir):
    from ledex_jax.sharding import make_mesh
    model, tok = tiny
    teacher = SamplerTeacher(model, tok, name="t", max_prompt_len=128, max_batch=8)
    a, b = request("a", "Write a function that adds two numbers."), request("b", "Reverse a list.", n=3)
    alone = teacher.answer([a])[0]
    both = teacher.answer([b, a])
    assert both[1].texts == alone.texts and len(both[0].texts) == 3
    assert alone.prompt_tokens > 0 and alone.completion_tokens > 0
    assert teacher.sampler.traces["prefill"] >= 1
    assert len(jax.local_devices()) == 8
    from ledex_jax.models.sources import load_model_and_tokenizer
    mesh = make_mesh((1, -1, 1), devices=jax.local_devices())
    on_mesh, _, _ = load_model_and_tokenizer(str(tiny_model_dir), mesh=mesh)
    sharded = SamplerTeacher(on_mesh, tok, name="t", max_prompt_len=128, max_batch=8, mesh=mesh)
    assert sharded.answer([b, a])[1].texts == alone.texts


def test_a_prompt_too_long_fails_only_its_answers(tiny):
    model, tok = tiny
    teacher = SamplerTeacher(model, tok, name="t", max_prompt_len=32, max_batch=8)
    long, short = request("long", "word " * 100), request("short", "Hi.")
    replies = teacher.answer([long, short])
    assert replies[0].texts == ["", ""] and "longer than this teacher takes" in replies[0].errors[0]
    assert replies[1].errors == ["", ""]
