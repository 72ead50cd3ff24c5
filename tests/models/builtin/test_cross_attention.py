"""TinyDiT's optional cross-attention to the prompt tokens: it reads word order (the pooled
vector cannot), the student still starts equal to the teacher, and the JVP matches finite
differences through it."""

import pytest
import torch

from tbcm.models.builtin.dit import DiTConfig, TinyDiT
from tbcm.models.builtin.text import PromptEncoder
from tbcm.models.student import Student
from tbcm.objectives.scm import jvp_autograd

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB = ["a", "red", "blue", "circle", "square", "left", "right", "of"]


def _net(cross: bool, guidance: bool = False) -> TinyDiT:
    torch.manual_seed(0)
    net = TinyDiT(DiTConfig(hidden=32, depth=2, heads=2, text_dim=16, text_cross_attention=cross,
                            guidance_embed=guidance))
    with torch.no_grad():  # zero-initialised gates and outputs would hide the prompt: make them random
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _encoder() -> PromptEncoder:
    torch.manual_seed(1)
    return PromptEncoder(VOCAB, dim=16, max_words=8, heads=2)


def test_cross_attention_reads_what_the_pooled_vector_cannot():
    enc = _encoder()
    # the same words in another order: the pooled mean of *embeddings without attention* is identical
    cond = enc.encode(["a red circle left of a blue square", "a blue square left of a red circle"])
    cond.embeds = enc.embed(enc.token_ids(["a red circle left of a blue square",
                                           "a blue square left of a red circle"])[0]) + enc.pos
    x = torch.randn(1, 1, 8, 8).repeat(2, 1, 1, 1)
    t = torch.full((2,), 500.0)
    with torch.no_grad():
        pooled, cross = _net(False)(x, t, cond), _net(True)(x, t, cond)
    assert torch.allclose(pooled[0], pooled[1], atol=1e-6)  # a bag of words
    assert (cross[0] - cross[1]).abs().max() > 1e-4


def test_a_cross_attention_student_starts_as_its_teacher_and_its_jvp_matches_finite_differences():
    teacher = _net(True)
    student_net = teacher.with_guidance_embed()
    assert student_net.config.text_cross_attention
    enc = _encoder()
    cond = enc.encode(["a red circle left of a blue square", "a blue circle"])
    x, tau = torch.randn(2, 1, 8, 8), torch.tensor([300.0, 700.0])
    with torch.no_grad():
        assert torch.equal(teacher(x, tau, cond), student_net(x, tau, cond, torch.tensor([1.0, 4.0])))
    student = Student(student_net.double(), sigma_d=0.5)
    cond64 = cond.apply(lambda z: z.double() if z.is_floating_point() else z)
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x64, t = x.double(), torch.tensor([0.4, 1.2], dtype=torch.float64)
    dx, dt = torch.randn_like(x64), torch.tensor([0.3, -0.2], dtype=torch.float64)
    _, jvp = jvp_autograd(lambda a, b: student(a, b, cond64, w), (x64, t), (dx, dt))
    h = 1e-5
    with torch.no_grad():
        fd = (student(x64 + h * dx, t + h * dt, cond64, w) - student(x64 - h * dx, t - h * dt, cond64, w)) / (2 * h)
    assert torch.allclose(jvp, fd, atol=1e-7, rtol=1e-5)
