"""RunningStatsConvergence: gaps against a direct computation, zero after recalibration, train/eval gap."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from normzoo.callbacks import RunningStatsConvergence
from normzoo.errors import ConfigError
from normzoo.models import MLPClassifier
from normzoo.norms import recalibrate_bn


class LinearBN(L.LightningModule):
    """A user's module: fixed Linear, BatchNorm1d, Linear head; no training (lr 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.fc(x)))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def data(n: int = 64) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=generator) * 3 + 5
    return DataLoader(TensorDataset(x, torch.randint(0, 2, (n,), generator=generator)), batch_size=n)


def test_gaps_match_a_direct_computation(trainer_kwargs):
    torch.manual_seed(0)
    model = LinearBN()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.5]))
    expected_mean, expected_var = model.bn.running_mean.clone(), model.bn.running_var.clone()
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, data())
    x = data().dataset.tensors[0]
    with torch.no_grad():
        inputs = model.fc(x).double()
    mu, var = inputs.mean(0), inputs.var(0)
    record = callback.history[0]
    assert record["fc/mean_gap"] == pytest.approx(((expected_mean - mu).abs() / torch.sqrt(var + 1e-5)).mean().item())
    assert record["fc/var_gap"] == pytest.approx(((expected_var - var).abs() / (var + 1e-5)).mean().item())
    assert record["train_eval/loss_gap"] != 0.0


def test_the_train_eval_loss_gap_uses_the_loss_given_with_loss(trainer_kwargs):
    """``loss=`` alone (no ``forward=``) replaces the replayed training_step's loss in both modes."""
    torch.manual_seed(0)
    model = LinearBN()
    with torch.no_grad():
        model.bn.running_mean.fill_(1.0)
    untrained = copy.deepcopy(model)

    def squared_logits(pl_module, batch):
        return pl_module(batch[0]).pow(2).mean()

    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64, loss=squared_logits)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, data())
    x = data().dataset.tensors[0]
    with torch.no_grad():  # eval first: a train-mode pass updates the running statistics
        eval_loss = untrained.eval()(x).pow(2).mean()
        train_loss = untrained.train()(x).pow(2).mean()
    assert callback.history[0]["train_eval/loss_gap"] == pytest.approx((eval_loss - train_loss).item(), rel=1e-5)


def test_gaps_vanish_after_recalibration_on_the_probe(trainer_kwargs):
    torch.manual_seed(0)
    model = LinearBN()
    recalibrate_bn(model, data())  # exact population statistics of the same 64 samples
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, data())
    record = callback.history[0]
    assert record["fc/mean_gap"] < 1e-6 and record["fc/var_gap"] < 1e-6
    # train mode normalizes with the biased batch variance, eval with the unbiased one: a 1/64 effect
    assert abs(record["train_eval/loss_gap"]) < 0.02 and abs(record["train_eval/acc_gap"]) <= 1 / 64  # <= 1 sample


def test_gaps_are_exact_when_the_mean_dwarfs_the_spread(trainer_kwargs):
    """Mean 1000, std 0.001: plain float64 sums of x and x**2 would give a var_gap of about 5.7e-4."""
    model = LinearBN().double()
    with torch.no_grad():  # the BN input is the data itself
        model.fc = nn.Identity()
        model.bn = nn.BatchNorm1d(4).double()
        model.head = nn.Linear(4, 2).double()
    generator = torch.Generator().manual_seed(0)
    x = 1000.0 + 0.001 * torch.randn(256, 4, generator=generator, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, torch.randint(0, 2, (256,), generator=generator)), batch_size=256)
    with torch.no_grad():
        model.bn.running_mean.copy_(x.mean(0))
        model.bn.running_var.copy_(x.var(0))
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=256, eps=0.0)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, loader)
    record = callback.history[0]
    assert record["bn/mean_gap"] < 1e-9 and record["bn/var_gap"] < 1e-8  # no weight layer before it: its own name


def test_running_stats_catch_up_during_training(trainer_kwargs):
    L.seed_everything(0)
    model = MLPClassifier(input_shape=(4,), num_classes=2, depth=1, width=8, norm="bn",
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}})
    callback = RunningStatsConvergence(every_n_steps=10, probe_size=16)
    loader = DataLoader(data(256).dataset, batch_size=16)
    L.Trainer(**trainer_kwargs(max_steps=31, callbacks=[callback])).fit(model, loader)
    gaps = [r["backbone.blocks.0/mean_gap"] for r in callback.history]
    assert len(gaps) == 4 and gaps[-1] < 0.2 * gaps[0]  # momentum 0.1: the lag decays over ~30 steps


def test_a_model_without_batchnorm_is_skipped_with_a_warning(trainer_kwargs):
    """One callback list serves a BN-vs-no-BN comparison: the no-BN run warns and measures nothing."""
    model = MLPClassifier(input_shape=(4,), num_classes=2, depth=1, width=8, norm="ln")
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=16)
    with pytest.warns(UserWarning, match="no BatchNorm layer with running statistics"):
        L.Trainer(**trainer_kwargs(max_steps=2, callbacks=[callback])).fit(model, data())
    assert callback.history == [] and callback.probe.batch is None
    with pytest.raises(ConfigError, match="'backbone.nope' is not a BatchNorm layer"):
        L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[RunningStatsConvergence(layers=["backbone.nope"])])).fit(
            model, data())


class ShapedOutputs(LinearBN):
    """LinearBN whose forward returns its logits in another shape, with the loss to match."""

    def __init__(self, shape: str) -> None:
        super().__init__()
        self.shape = shape
        if shape in ("single_logit", "regression"):
            self.head = nn.Linear(3, 1)

    def forward(self, x):
        logits = self.head(self.bn(self.fc(x)))
        if self.shape == "tuple":
            return logits, self.fc(x)
        if self.shape == "dict":
            return {"embedding": self.fc(x), "logits": logits}
        return logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self(x)
        if self.shape == "tuple":
            return F.cross_entropy(out[0], y)
        if self.shape == "dict":
            return {"loss": F.cross_entropy(out["logits"], y)}
        if self.shape == "single_logit":
            return F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
        return F.mse_loss(out.squeeze(1), y)  # regression: float targets


@pytest.mark.parametrize("shape", ["tuple", "dict", "single_logit", "regression"])
def test_the_train_eval_gap_reads_any_output(shape, trainer_kwargs):
    """Documented rule: the loss always; accuracy of the primary output where it is classification; l2 of all."""
    torch.manual_seed(0)
    model = ShapedOutputs(shape)
    with torch.no_grad():
        model.bn.running_mean.fill_(1.0)
    untrained = copy.deepcopy(model)  # step 0 is measured before the step updates the running statistics
    x, y = data().dataset.tensors
    if shape == "regression":
        y = x[:, 0] * 0.5
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    callback = RunningStatsConvergence(every_n_steps=1, probe_size=64)
    L.Trainer(**trainer_kwargs(max_steps=1, callbacks=[callback])).fit(model, loader)
    record = callback.history[0]
    model = untrained
    with torch.no_grad():  # eval first: a train-mode pass updates the running statistics
        eval_loss, eval_out = model.eval().training_step((x, y), 0), model(x)
        train_loss, train_out = model.train().training_step((x, y), 0), model(x)
    loss = {"dict": lambda v: v["loss"]}.get(shape, lambda v: v)
    assert record["train_eval/loss_gap"] == pytest.approx((loss(eval_loss) - loss(train_loss)).item(), rel=1e-5)
    logits = {"tuple": lambda o: o[0], "dict": lambda o: o["logits"]}.get(shape, lambda o: o)
    if shape == "regression":
        assert "train_eval/acc_gap" not in record
    else:
        predict = (lambda o: (o.squeeze(1) > 0).long()) if shape == "single_logit" else (lambda o: o.argmax(1))
        accuracy = [(predict(logits(o)) == y).float().mean().item() for o in (eval_out, train_out)]
        assert record["train_eval/acc_gap"] == pytest.approx(accuracy[0] - accuracy[1], abs=1e-6)
    tensors = {"tuple": lambda o: list(o), "dict": lambda o: [o["embedding"], o["logits"]]}.get(shape, lambda o: [o])
    squared = sum((a - b).pow(2).sum() for a, b in zip(tensors(eval_out), tensors(train_out), strict=True))
    relative = (squared / sum(b.pow(2).sum() for b in tensors(train_out))).sqrt().item()
    assert record["train_eval/output_gap"] == pytest.approx(relative, rel=1e-4)
