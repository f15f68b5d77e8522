"""The deep zoo: shapes, config validation, hooks, gradients, DeepLOB widths, causality."""

from __future__ import annotations

import pytest
import torch

from models.config import ModelDims
from models.registry import build_module, get_spec, list_models, resolve
from models.spec import PRESETS
from models.zoo.cnn import CNNConfig
from models.zoo.cnn_bilstm import CNNBiLSTMConfig
from models.zoo.cnn_gru import CNNGRUConfig
from models.zoo.deeplob import DeepLOBConfig
from models.zoo.gru import GRUConfig
from models.zoo.lstm import LSTMConfig
from models.zoo.mlp import MLPConfig
from models.zoo.seq2seq import Seq2SeqConfig
from models.zoo.tcn import TCNConfig
from models.zoo.temporal_attention import TemporalAttentionConfig
from models.zoo.transformer import TransformerConfig

F, L, H = 12, 16, 4
DEEP = list_models("deep")


def _input(name: str, batch: int, n_features: int = F, seq_len: int = L) -> torch.Tensor:
    if get_spec(name).input == "tabular":
        return torch.randn(batch, n_features)
    return torch.randn(batch, seq_len, n_features)


def _build(name: str, preset: str = "fast", task: str = "direction", n_features: int = F):
    torch.manual_seed(0)
    dims = ModelDims(n_features=n_features, seq_len=L, n_horizons=H, task=task)
    return build_module(name, resolve(name, preset).model, dims)


def test_all_eleven_deep_models_are_registered() -> None:
    assert sorted(DEEP) == sorted(
        [
            "mlp",
            "lstm",
            "gru",
            "cnn",
            "tcn",
            "deeplob",
            "seq2seq",
            "transformer",
            "temporal_attention",
            "cnn_gru",
            "cnn_bilstm",
        ]
    )


@pytest.mark.parametrize("task", ["direction", "return"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", DEEP)
def test_forward_shapes(name: str, preset: str, task: str) -> None:
    model = _build(name, preset, task)
    expected_tail = (H, 3) if task == "direction" else (H,)
    model.train()
    assert tuple(model(_input(name, 7)).shape) == (7, *expected_tail)
    model.eval()
    with torch.no_grad():
        for batch in (1, 7):
            out = model(_input(name, batch))
            assert tuple(out.shape) == (batch, *expected_tail)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", DEEP)
def test_rows_of_a_batch_are_independent_in_eval_mode(name: str) -> None:
    """Batch 1 and batch 7 agree row by row: no batch-size-dependent code path."""
    model = _build(name).eval()
    x = _input(name, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x[2:3]), model(x)[2:3], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MLPConfig(hidden_size=0), "mlp.hidden_size=0: use a positive integer such as 64"),
        (lambda: MLPConfig(activation="swish"), "mlp.activation='swish': choose one of"),
        (lambda: LSTMConfig(hidden_size=0), "lstm.hidden_size=0: use a positive integer"),
        (lambda: LSTMConfig(dropout=1.0), r"lstm.dropout=1.0: use a probability in \[0, 1\)"),
        (lambda: GRUConfig(num_layers=0), "gru.num_layers=0: use a positive integer such as 2"),
        (lambda: CNNConfig(kernel_size=4), "cnn.kernel_size=4: use an odd kernel size"),
        (lambda: CNNConfig(pooling="sum"), "cnn.pooling='sum': choose one of"),
        (lambda: TCNConfig(kernel_size=1), "tcn.kernel_size=1: use 2 or more"),
        (lambda: TCNConfig(channels=-3), "tcn.channels=-3: use a positive integer"),
        (lambda: DeepLOBConfig(conv_channels=0), "deeplob.conv_channels=0"),
        (lambda: DeepLOBConfig(leaky_slope=1.5), "deeplob.leaky_slope=1.5"),
        (lambda: Seq2SeqConfig(cell="rnn"), "seq2seq.cell='rnn': choose one of"),
        (lambda: Seq2SeqConfig(attention_size=0), "seq2seq.attention_size=0"),
        (
            lambda: TransformerConfig(d_model=30, n_heads=4),
            "transformer.d_model=30 is not divisible by n_heads=4",
        ),
        (lambda: TransformerConfig(pooling="cls"), "transformer.pooling='cls'"),
        (lambda: TemporalAttentionConfig(scales=()), r"temporal_attention.scales=\(\)"),
        (lambda: TemporalAttentionConfig(scales=(1, 0)), "use a non-empty tuple of positive"),
        (lambda: CNNGRUConfig(kernel_size=2), "cnn_gru.kernel_size=2: use an odd kernel"),
        (lambda: CNNGRUConfig(hidden_size=0), "cnn_gru.hidden_size=0"),
        (lambda: CNNBiLSTMConfig(dropout=-0.1), "cnn_bilstm.dropout=-0.1"),
        (lambda: CNNBiLSTMConfig(conv_layers=0), "cnn_bilstm.conv_layers=0"),
        # a dilation pads every window by itself: 10**9 asked a worker for gigabytes
        (lambda: TemporalAttentionConfig(scales=(1, 10**9)), "at most 4096 steps each"),
        (lambda: TemporalAttentionConfig(scales=tuple(range(1, 18))), "at most 16 dilations"),
        # level i pads by (k - 1) 2**i steps: 40 levels are 2**40 padded steps per sample
        (lambda: TCNConfig(num_levels=40), r"tcn.num_levels=40: .*use fewer levels"),
        (lambda: TCNConfig(num_levels=2, kernel_size=4096), "tcn.num_levels=2: .*4096"),
    ],
)
def test_config_validation_says_how_to_fix(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", DEEP)
def test_wrong_input_layout_is_a_clear_error(name: str) -> None:
    model = _build(name).eval()
    wrong = torch.randn(3, L, F) if get_spec(name).input == "tabular" else torch.randn(3, F)
    with pytest.raises(ValueError, match=f"{name}: expected"):
        model(wrong)


def _expected_hooks(name: str, config, batch: int) -> dict[str, tuple[int, ...]]:
    """The documented shapes of each model's interpretability outputs."""
    if name == "lstm":
        return {"hidden_states": (batch, L, config.hidden_size * (1 + config.bidirectional))}
    if name == "cnn_bilstm":
        return {"hidden_states": (batch, L, 2 * config.hidden_size)}
    if name in ("gru", "cnn_gru", "deeplob"):
        return {"hidden_states": (batch, L, config.hidden_size)}
    if name == "seq2seq":
        return {"attention": (batch, H, L), "hidden_states": (batch, L, config.hidden_size)}
    if name == "transformer":
        return {"attention": (batch, config.n_heads, L, L)}
    if name == "temporal_attention":
        return {"attention": (batch, H, L)}
    return {}


@pytest.mark.parametrize("preset", ["fast", "quality"])
@pytest.mark.parametrize("name", DEEP)
def test_interpret_hooks_have_documented_shapes(name: str, preset: str) -> None:
    spec = get_spec(name)
    model = _build(name, preset).eval()
    expected = _expected_hooks(name, model.config, batch=5)
    assert set(spec.hooks) == set(expected)
    if not spec.hooks:
        assert not hasattr(model, "interpret")
        return
    with torch.no_grad():
        hooks = model.interpret(_input(name, 5))
    assert {k: tuple(v.shape) for k, v in hooks.items()} == expected
    if "attention" in hooks:  # weights over time steps are a distribution
        sums = hooks["attention"].sum(dim=-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("preset", ["fast", "quality"])
@pytest.mark.parametrize("name", DEEP)
def test_one_backward_step_reaches_every_parameter(name: str, preset: str) -> None:
    model = _build(name, preset).train()
    logits = model(_input(name, 7))  # [B, H, 3]
    target = torch.randint(0, 3, (7, H))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), target.reshape(-1))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", DEEP)
def test_presets_grow_from_fast_to_quality(name: str) -> None:
    sizes = [sum(p.numel() for p in _build(name, preset).parameters()) for preset in PRESETS]
    assert sizes[0] < sizes[1] <= sizes[2], sizes


def test_deeplob_on_lob_width_follows_the_paper_layout() -> None:
    """With 40 LOB columns the width convs are 1x2/2, 1x2/2 and 1x10, as in the paper."""
    model = _build("deeplob", "quality", n_features=40).eval()
    width_kernels = [
        (m.kernel_size, m.stride)
        for m in model.convs.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size[1] > 1
    ]
    assert width_kernels == [((1, 2), (1, 2)), ((1, 2), (1, 2)), ((1, 10), (1, 1))]
    x = torch.randn(3, L, 40)
    with torch.no_grad():
        assert tuple(model.convs(x.unsqueeze(1)).shape[2:]) == (L, 1)  # width collapsed to 1
        assert tuple(model(x).shape) == (3, H, 3)
        assert tuple(model.interpret(x)["hidden_states"].shape) == (3, L, 64)


@pytest.mark.parametrize("n_features", [1, 3, 5, 41])
def test_deeplob_accepts_any_feature_width(n_features: int) -> None:
    model = _build("deeplob", n_features=n_features).eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(2, L, n_features)).shape) == (2, H, 3)


def test_tcn_convolutions_are_causal() -> None:
    """Changing the input at step t changes the TCN's features at steps >= t only."""
    model = _build("tcn", "balanced").eval()
    x = torch.randn(2, L, F)
    x2 = x.clone()
    x2[:, 9] += 5.0
    with torch.no_grad():
        z, z2 = (model.blocks(v.transpose(1, 2)) for v in (x, x2))  # [B, C, L]
    torch.testing.assert_close(z[:, :, :9], z2[:, :, :9])
    assert (z[:, :, 9:] - z2[:, :, 9:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["transformer", "temporal_attention"])
def test_fixed_window_models_reject_other_lengths(name: str) -> None:
    model = _build(name).eval()
    with pytest.raises(ValueError, match=f"built for seq_len={L}"):
        model(torch.randn(2, L + 4, F))


def test_seq2seq_attends_separately_per_horizon() -> None:
    """Each horizon's decoder step has its own attention distribution."""
    model = _build("seq2seq").eval()
    with torch.no_grad():
        attention = model.interpret(torch.randn(3, L, F))["attention"]  # [B, H, L]
    assert (attention[:, 0] - attention[:, -1]).abs().max() > 1e-6


def test_the_largest_allowed_dilations_still_build_and_run() -> None:
    """The bounds refuse what cannot run, not what can: the widest TCN and multi-scale
    encoder they allow run a window of the shortest length a job may use (5 steps)."""
    dims = ModelDims(n_features=3, seq_len=5, n_horizons=2)
    tcn = TCNConfig(num_levels=13, kernel_size=2)  # last level looks 4096 steps back
    ta = TemporalAttentionConfig(scales=tuple(2**i for i in range(12)) + (4096,) * 4)
    for name, config in (("tcn", tcn), ("temporal_attention", ta)):
        out = build_module(name, config, dims).eval()(torch.zeros(1, 5, 3))
        assert out.shape == (1, 2, 3) and torch.isfinite(out).all()
