"""A gallery of LightningModules written the way other people write them.

Each entry is shaped after a published Lightning example (the ``examples/pytorch`` templates of
Lightning-AI/pytorch-lightning and the "CIFAR-10 ResNet-18 baseline" tutorial), shrunk so that a
training step takes a fraction of a second on a small CPU. The diagnostics callbacks are then tried
on code they did not design: this file deliberately knows nothing about ``normzoo``.

Public names:

* ``GALLERY[name]()`` builds a fresh ``(module, train_dataloader)``. The data come from seeded
  ``torch.Generator`` objects and are the same on every call; the weights come from the global RNG,
  so call ``seed_everything`` first for identical weights.
* ``trainer_options(name)`` gives fresh extra ``Trainer`` kwargs for an entry (``{}`` when none);
  ``TRAINER_OPTIONS[name]`` holds the zero-argument builders behind it (callbacks are stateful,
  so they are never shared between runs).
* ``trainer_class(name)`` is the ``Trainer`` class an entry must be trained by, and
  ``pl_trainer_class()`` is ``pytorch_lightning.Trainer``, which "resnet_pl" needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

BATCH_SIZE = 16

# ----------------------------------------------------------------------------- data


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=_generator(seed))


def _labels(x: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Class ids that depend on the images (a fixed random projection), so there is something to learn."""
    projection = torch.randn(x[0].numel(), num_classes, generator=_generator(seed))
    return (x.flatten(1) @ projection).argmax(dim=1)


def _loader(dataset: Dataset, seed: int, batch_size: int = BATCH_SIZE) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=_generator(seed))


class DictDataset(Dataset):
    """Samples as dicts, keys in the order given (the default collate keeps that order)."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


# ----------------------------------------------------------------------------- 1. autoencoder


class LitAutoEncoder(LightningModule):
    """Follows examples/pytorch/basics/autoencoder.py: flattened input, MSE, Adam."""

    def __init__(self, hidden_dim: int = 32, learning_rate: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(64, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 3))
        self.decoder = nn.Sequential(nn.Linear(3, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 64))

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, _ = batch
        x = x.view(x.size(0), -1)
        x_hat = self.decoder(self.encoder(x))
        loss = F.mse_loss(x_hat, x)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def make_autoencoder() -> tuple[LightningModule, DataLoader]:
    x = _images(64, (1, 8, 8), seed=101)
    return LitAutoEncoder(), _loader(TensorDataset(x, _labels(x, 10, seed=102)), seed=103)


# ----------------------------------------------------------------------------- 2. gan


class Generator(nn.Module):
    """Follows the Generator of examples/pytorch/domain_templates/generative_adversarial_net.py."""

    def __init__(self, latent_dim: int = 16, img_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        self.img_shape = img_shape

        def block(in_feat, out_feat, normalize=True):
            layers = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        out_features = img_shape[0] * img_shape[1] * img_shape[2]
        self.model = nn.Sequential(
            *block(latent_dim, 32, normalize=False), *block(32, 64), nn.Linear(64, out_features), nn.Tanh()
        )

    def forward(self, z):
        img = self.model(z)
        return img.view(img.size(0), *self.img_shape)


class Discriminator(nn.Module):
    """Follows the Discriminator of the same GAN template: MLP ending in one logit."""

    def __init__(self, in_features: int = 64) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(in_features, 64), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(64, 32), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(32, 1),
        )  # fmt: skip

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))


class GAN(LightningModule):
    """Follows examples/pytorch/domain_templates/generative_adversarial_net.py (manual optimization)."""

    def __init__(self, latent_dim: int = 16, lr: float = 2e-4, b1: float = 0.5, b2: float = 0.999) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim=latent_dim)
        self.discriminator = Discriminator()

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        imgs, _ = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(imgs.size(0), self.hparams.latent_dim).type_as(imgs)
        valid = torch.ones(imgs.size(0), 1).type_as(imgs)
        fake = torch.zeros(imgs.size(0), 1).type_as(imgs)

        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z)), valid)
        self.manual_backward(g_loss)
        opt_g.step()
        opt_g.zero_grad()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(imgs), valid)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(self(z).detach()), fake)
        d_loss = (real_loss + fake_loss) / 2
        self.manual_backward(d_loss)
        opt_d.step()
        opt_d.zero_grad()
        self.untoggle_optimizer(opt_d)

        self.log_dict({"g_loss": g_loss, "d_loss": d_loss})

    def configure_optimizers(self):
        betas = (self.hparams.b1, self.hparams.b2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr, betas=betas)
        return [opt_g, opt_d]


def make_gan() -> tuple[LightningModule, DataLoader]:
    x = torch.tanh(_images(64, (1, 8, 8), seed=201))
    return GAN(), _loader(TensorDataset(x, torch.zeros(64, dtype=torch.long)), seed=202)


# ----------------------------------------------------------------------------- 3. segmentation


class DoubleConv(nn.Module):
    """Follows DoubleConv of examples/pytorch/domain_templates/semantic_segmentation.py."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


class Up(nn.Module):
    """Follows Up of the same template: transposed conv, concatenate the skip, double conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x1, x2):
        return self.conv(torch.cat([x2, self.upsample(x1)], dim=1))


class UNet(nn.Module):
    """Follows UNet of the same template with num_layers=3 (2 down, 2 up) and features_start=8."""

    def __init__(self, num_classes: int = 3, features_start: int = 8) -> None:
        super().__init__()
        f = features_start
        self.layers = nn.ModuleList([
            DoubleConv(3, f),
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(f, 2 * f)),
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * f, 4 * f)),
            Up(4 * f, 2 * f),
            Up(2 * f, f),
            nn.Conv2d(f, num_classes, kernel_size=1),
        ])  # fmt: skip

    def forward(self, x):
        x1 = self.layers[0](x)
        x2 = self.layers[1](x1)
        x3 = self.layers[2](x2)
        return self.layers[5](self.layers[4](self.layers[3](x3, x2), x1))


class SegModel(LightningModule):
    """Follows SegModel of examples/pytorch/domain_templates/semantic_segmentation.py (dict batches, ignored pixels)."""

    def __init__(self, lr: float = 0.05, ignore_index: int = 255) -> None:
        super().__init__()
        self.lr = lr
        self.ignore_index = ignore_index
        self.net = UNet(num_classes=3, features_start=8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        img, mask = batch["image"].float(), batch["mask"]
        out = self(img)
        loss = F.cross_entropy(out, mask.long(), ignore_index=self.ignore_index)
        n_valid = (mask != self.ignore_index).sum()
        self.log("train_loss", loss, prog_bar=True)
        return {"loss": loss, "pixels": n_valid}

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=0.9)


def make_segmentation() -> tuple[LightningModule, DataLoader]:
    image = _images(64, (3, 16, 16), seed=301)
    mask = image.argmax(dim=1).to(torch.uint8)  # class 0..2: the brightest channel
    mask[torch.rand(mask.shape, generator=_generator(302)) < 0.1] = 255  # about 10% "void" pixels
    return SegModel(), _loader(DictDataset(image=image, mask=mask), seed=303)


# ----------------------------------------------------------------------------- 4. finetune


class FeatureExtractorFreezeUnfreeze(BaseFinetuning):
    """Follows MilestonesFinetuning of examples/pytorch/domain_templates/computer_vision_fine_tuning.py."""

    def __init__(self, unfreeze_at_epoch: int = 1, train_bn: bool = False) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.train_bn = train_bn

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer) -> None:
        if epoch == self.unfreeze_at_epoch:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer=optimizer, train_bn=self.train_bn)


class TransferLearningModel(LightningModule):
    """Follows TransferLearningModel of computer_vision_fine_tuning.py: resnet18 backbone, one-logit head."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        backbone = torchvision.models.resnet18(weights=None, num_classes=2)
        self.backbone = nn.Sequential(*list(backbone.children())[:-1])  # everything up to the avgpool
        self.fc = nn.Linear(512, 1)

    def forward(self, x):
        return self.fc(self.backbone(x).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits.squeeze(1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        trainable = list(filter(lambda p: p.requires_grad, self.parameters()))
        return torch.optim.Adam(trainable, lr=self.hparams.lr)


def make_finetune() -> tuple[LightningModule, DataLoader]:
    x = _images(64, (3, 16, 16), seed=401)
    y = _labels(x, 2, seed=402).float()
    return TransferLearningModel(), _loader(TensorDataset(x, y), seed=403)


# ----------------------------------------------------------------------------- 5. resnet_pl


def create_cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """Follows create_model of the "CIFAR-10 ResNet-18 baseline" tutorial: 3x3 stem, no max-pool."""
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    model.maxpool = nn.Identity()
    return model


class LitResnet(pl.LightningModule):
    """Follows LitResnet of the "CIFAR-10 ResNet-18 baseline" tutorial (``pytorch_lightning``, OneCycleLR)."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_cifar_resnet18()

    def forward(self, x):
        return F.log_softmax(self.model(x), dim=1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.nll_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, 0.1, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_resnet_pl() -> tuple[pl.LightningModule, DataLoader]:
    # A stride-1 ResNet-18 costs ~0.4 s per batch of 16 at 32x32 on 2 CPU cores: 16x16 images, batches of 8.
    x = _images(32, (3, 16, 16), seed=501)
    return LitResnet(), _loader(TensorDataset(x, _labels(x, 10, seed=502)), seed=503, batch_size=8)


def pl_trainer_class() -> type:
    """The ``Trainer`` that can fit "resnet_pl" (a ``pytorch_lightning`` module)."""
    return pl.Trainer


# ----------------------------------------------------------------------------- 6. functional


class FunctionalBackbone(nn.Module):
    """Follows Backbone of examples/pytorch/basics/backbone_image_classifier.py: functional activations only."""

    def __init__(self, hidden_dim: int = 32) -> None:
        super().__init__()
        self.l1 = nn.Linear(64, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, hidden_dim)
        self.l3 = nn.Linear(hidden_dim, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = torch.relu(self.l1(x))
        x = F.gelu(self.l2(x))
        x = x * self.gate(x).sigmoid()
        return self.l3(x)


class LitClassifier(LightningModule):
    """Follows LitClassifier of examples/pytorch/basics/backbone_image_classifier.py."""

    def __init__(self, backbone: nn.Module | None = None, learning_rate: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone if backbone is not None else FunctionalBackbone()

    def forward(self, x):
        return self.backbone(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def _digits(seed: int, n: int = 64) -> TensorDataset:
    """Tiny 1x8x8 'digits' with 10 classes."""
    x = _images(n, (1, 8, 8), seed=seed)
    return TensorDataset(x, _labels(x, 10, seed=seed + 1))


def make_functional() -> tuple[LightningModule, DataLoader]:
    return LitClassifier(), _loader(_digits(601), seed=603)


# ----------------------------------------------------------------------------- 7. no_forward


class NoForwardClassifier(LightningModule):
    """Follows the LightningModule docs' "training_step only" style: no forward(), submodules called directly."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh())
        self.head = nn.Linear(16, 10)

    def training_step(self, batch, batch_idx):
        x, y = batch
        z = self.encoder(x.view(x.size(0), -1))
        loss = F.cross_entropy(self.head(z), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def make_no_forward() -> tuple[LightningModule, DataLoader]:
    return NoForwardClassifier(), _loader(_digits(701), seed=703)


# ----------------------------------------------------------------------------- 8./9. dict batches


class DictBatchClassifier(LightningModule):
    """Follows the backbone classifier example, fed by a dataset that yields dict samples (as HF-style datasets do)."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch["image"], batch["label"]
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def make_dict_batch_label_first() -> tuple[LightningModule, DataLoader]:
    x, y = _digits(801).tensors
    return DictBatchClassifier(), _loader(DictDataset(label=y, image=x), seed=803)


def make_dict_batch_image_first() -> tuple[LightningModule, DataLoader]:
    x, y = _digits(901).tensors
    return DictBatchClassifier(), _loader(DictDataset(image=x, label=y), seed=903)


# ----------------------------------------------------------------------------- 10./11. tuple and dict outputs


class TupleOutputClassifier(LightningModule):
    """Follows the backbone classifier example, with forward returning ``(logits, features)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        features = self.features(x.view(x.size(0), -1))
        return self.classifier(features), features

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, _ = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def make_tuple_output() -> tuple[LightningModule, DataLoader]:
    return TupleOutputClassifier(), _loader(_digits(1001), seed=1003)


class DictOutputClassifier(LightningModule):
    """Follows the backbone classifier example, with forward returning a dict (as HF-style models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        embedding = self.embed(x.view(x.size(0), -1))
        return {"logits": self.classifier(embedding), "embedding": embedding}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x)["logits"], y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def make_dict_output() -> tuple[LightningModule, DataLoader]:
    return DictOutputClassifier(), _loader(_digits(1101), seed=1103)


# ----------------------------------------------------------------------------- 12. accumulate


class SmallCNN(LightningModule):
    """Follows the Lightning docs' image classifier (conv-BN-ReLU stacks), trained with accumulate_grad_batches=4."""

    def __init__(self, num_classes: int = 10, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def make_accumulate() -> tuple[LightningModule, DataLoader]:
    x = _images(64, (3, 16, 16), seed=1201)
    return SmallCNN(), _loader(TensorDataset(x, _labels(x, 10, seed=1202)), seed=1203)


# ----------------------------------------------------------------------------- 13. shared_relu


class SharedReluMLP(LightningModule):
    """Follows torchvision's BasicBlock habit of one ``self.relu`` module called several times per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(64, 32), nn.BatchNorm1d(32)
        self.fc2, self.bn2 = nn.Linear(32, 32), nn.BatchNorm1d(32)
        self.fc3, self.bn3 = nn.Linear(32, 16), nn.BatchNorm1d(16)
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.act(self.bn1(self.fc1(x)))
        x = self.act(self.bn2(self.fc2(x)))
        x = self.act(self.bn3(self.fc3(x)))
        return self.out(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def make_shared_relu() -> tuple[LightningModule, DataLoader]:
    return SharedReluMLP(), _loader(_digits(1301), seed=1303)


# ----------------------------------------------------------------------------- registry

GALLERY: dict[str, Callable[[], tuple[LightningModule, DataLoader]]] = {
    "autoencoder": make_autoencoder,
    "gan": make_gan,
    "segmentation": make_segmentation,
    "finetune": make_finetune,
    "resnet_pl": make_resnet_pl,
    "functional": make_functional,
    "no_forward": make_no_forward,
    "dict_batch_label_first": make_dict_batch_label_first,
    "dict_batch_image_first": make_dict_batch_image_first,
    "tuple_output": make_tuple_output,
    "dict_output": make_dict_output,
    "accumulate": make_accumulate,
    "shared_relu": make_shared_relu,
}


def _finetune_options() -> dict[str, Any]:
    return {"callbacks": [FeatureExtractorFreezeUnfreeze(unfreeze_at_epoch=1)]}


def _accumulate_options() -> dict[str, Any]:
    return {"accumulate_grad_batches": 4}


# Builders, not dicts: a callback holds state, so every run gets its own.
TRAINER_OPTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "finetune": _finetune_options,
    "accumulate": _accumulate_options,
}


def trainer_options(name: str) -> dict[str, Any]:
    """Fresh extra ``Trainer`` kwargs that entry ``name`` needs (``{}`` when it needs none)."""
    if name not in GALLERY:
        raise KeyError(f"no gallery entry {name!r}")
    build = TRAINER_OPTIONS.get(name)
    return build() if build is not None else {}


def trainer_class(name: str) -> type:
    """The ``Trainer`` class that can fit entry ``name``."""
    if name not in GALLERY:
        raise KeyError(f"no gallery entry {name!r}")
    return pl_trainer_class() if name == "resnet_pl" else Trainer
