"""Forward parity of every case of both families: swin_jax vs swin_torch_ref and vs timm, every
parameter at O(1) scale; logits and every intermediate within 1e-5 * max(1, max|ref|)."""
import pytest
from conftest import build_case, check_case, timm_model
from test_swin_forward import SWIN_CASES
from test_vit_forward import VIT_CASES


@pytest.fixture(scope="module", params=SWIN_CASES + VIT_CASES)
def case(request):
    return build_case(*request.param)


def test_forward_vs_swin_torch_ref(case, record):
    check_case(case, case.ref_model, "swin_torch_ref", record)


def test_forward_vs_timm(case, record):
    model = timm_model(case.name, **case.overrides)
    model.load_state_dict(case.ref_model.state_dict(), strict=True)
    check_case(case, model, "timm", record)
