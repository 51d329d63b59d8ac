"""Daneshmand et al. 2020, "Batch Normalization Provably Avoids Rank Collapse for Randomly Initialised Deep Networks".

    normzoo study daneshmand --quick      # MNIST-5k, 5 epochs per run: minutes on a CPU
    normzoo study daneshmand              # MNIST, 10 epochs per run

A deep MLP (32 hidden layers of 128 units, Gaussian weights of variance 1 / fan_in) with and
without BN, linear (identity activation) and ReLU. ``SignalPropagation`` measures the first
training batch (60 digits) at initialization, at every depth, in train mode (BN normalizes with
the batch's own statistics): the stable rank ``||H||_F^2 / ||H||_2^2`` of the batch representation
H (60 x 128) and the mean pairwise cosine of its samples. Then plain SGD trains every run with the
same step size, so the report compares how far each gets.

Where it measures, at each depth k (``blocks.k``, ``backbone.blocks.k`` in the classifier, is
Linear -> norm -> activation):

- ``blocks.k.norm``, the pre-activation: the input of the nonlinearity, the norm's output (the
  linear's output without a norm, where the norm is the identity). The stable rank is judged here.
  An uncentred ReLU output keeps a mean direction shared by every sample: for standardized
  pre-activations it holds a fraction 1/pi of the squared norm, so its stable rank is at most
  about pi whatever the rank of the pre-activation. The ReLU outputs of a BN net would then sit
  near pi, close to a collapsed net's 1 whatever BN does to the rank. BN centres every unit over
  the batch, so its output, the next ReLU's input, has no such shared direction.
- ``blocks.k``, the block output: for the linear nets the same tensor as ``blocks.k.norm``; for the
  ReLU nets the post-ReLU representation, uncentred with or without BN. The cosine of the ReLU nets
  is judged here: BN's centring sets the mean pairwise cosine of its own output to about -1/(B-1)
  (exactly, when the samples' norms are equal), so at ``blocks.k.norm`` a BN net's cosine says
  nothing about depth; after the ReLU it is not set by construction (about 1/pi for independent
  standardized units), and rank collapse drives it towards 1.

For the linear nets both sites are one tensor (BN's output, or the linear's without a norm), so
their cosine claim only checks that the plain net's samples share a direction (cosine > 0) where
BN's are centred; the stable rank is the test there. The table of both statistics against depth
is printed by ``python scripts/rank_table.py runs/studies/daneshmand/quick``.

What else differs between the runs, by construction of this paper-like setup:

- the digits share a direction before any layer (the inputs are standardized with one mean and
  std for all pixels, not centred per pixel), so BN's centring lifts the stable rank from the first layer
  on; the depth trend within each run is the table's, the claims compare the deepest layer only;
- at variance 1 / fan_in a ReLU halves the second moment of the signal at each layer, so without
  BN the deepest layer's second moment is of order 2^-32 of the first's and the gradients of the first layers
  vanish: that net's training fails for want of scale as well as of rank. Without skips, BN's ReLU
  net has the opposite problem: gradients that grow towards the input (Yang et al. 2019), which
  ``grad_norm`` records.
"""

from normzoo.studies.spec import PACKAGE_ROOT, Study, StudyRun

DEPTH = 32
"""Hidden layers of the MLP (``daneshmand.yaml``'s ``depth``; its ``SignalPropagation`` names each one's modules)."""
NORMS = ("none", "bn")
ACTIVATIONS = {"linear": "identity", "relu": "relu"}
"""Run name suffix -> the MLP's activation."""
DEEPEST = f"backbone.blocks.{DEPTH - 1}"
SIGNAL = "zoo/signal_propagation"


def measured_layers(depth: int = DEPTH) -> list[str]:
    """Every block's pre-activation and output, in forward order: ``daneshmand.yaml``'s ``SignalPropagation`` layers."""
    return [name for k in range(depth) for name in (f"backbone.blocks.{k}.norm", f"backbone.blocks.{k}")]


def runs() -> tuple[StudyRun, ...]:
    """No norm and BN, each as a deep linear net and as a deep ReLU net."""
    return tuple(StudyRun(f"{norm}_{kind}", ("--model.norm", norm, "--model.activation", activation))
                 for kind, activation in ACTIVATIONS.items() for norm in NORMS)


def claims() -> tuple[str, ...]:
    """Rank at initialization at the deepest layer, then training, in the report's claim syntax."""
    pre, out = f"{SIGNAL}/{DEEPEST}.norm", f"{SIGNAL}/{DEEPEST}"
    return (
        f"BN keeps the rank of a deep linear net: bn_linear > none_linear on {pre}/stable_rank@0",
        f"without BN the linear net's samples share a direction: none_linear > bn_linear on {pre}/cosine@0",
        f"BN keeps the rank of a deep ReLU net's pre-activations: bn_relu > none_relu on {pre}/stable_rank@0",
        f"even after the ReLU, whose mean caps it near pi: bn_relu > none_relu on {out}/stable_rank@0",
        f"without BN the ReLU net maps every sample to nearly one direction: none_relu > bn_relu on {out}/cosine@0",
        "rank collapse slows training; BN trains the linear net: bn_linear < none_linear on train/loss",
        "... and the ReLU net: bn_relu < none_relu on train/loss",
        "BN's linear net is more accurate: bn_linear > none_linear on val/acc",
        "BN's ReLU net is more accurate: bn_relu > none_relu on val/acc",
    )


STUDY = Study(
    name="daneshmand",
    title="Daneshmand et al. 2020: BN avoids rank collapse in deep networks at initialization",
    claim="""
**Setup**: deep linear and ReLU MLPs at a standard Gaussian init (weight variance 1 / width), with
and without BN; the rank of the batch representation H (samples x units) at each depth at
initialization, then training by SGD.
Here: 32 hidden layers of 128 units, Gaussian weights of variance 1 / fan_in, zero biases, MNIST
(quick mode: MNIST-5k's 4,500 training digits), batch 60, plain SGD at lr 0.01 for every run (not
tuned), 10 epochs (quick mode: 5). Rank: the stable rank ||H||_F^2 / ||H||_2^2 of the first training
batch at initialization (at most 60), and the mean pairwise cosine of its samples.

**Claims**: without BN, H loses rank with depth: the samples map to nearly the same direction
(stable rank towards 1, cosine towards 1). With BN its rank stays of order sqrt(width) at every
depth. Rank collapse slows training: SGD trains the deep nets without BN slowly or not at all, and
with BN it trains them.
""",
    configs=("configs/mnist/mlp.yaml", "studies/catalog/daneshmand.yaml"),
    quick_configs=("studies/catalog/daneshmand.quick.yaml",),
    runs=runs(),
    # SignalPropagation is daneshmand.yaml's own callback (its layers: measured_layers()); its values are at
    # step 0 only, so the report draws no diagnostics over steps: scripts/rank_table.py shows them against depth
    report_args=("--curves", "train/loss", "val/acc", "val/loss", "--no-diagnostics", "--no-bands"),
    claims=claims(),
    root=PACKAGE_ROOT,
)
