"""Backbones (plain ``nn.Module``s taking ``norm=``) and the LightningModules that train them."""

from normzoo.models.classifier import CNN_ARCHS, CNNClassifier, MLPClassifier, NormClassifier, build_cnn
from normzoo.models.layers import ACTIVATIONS, INIT_SCHEMES, init_weights
from normzoo.models.mlp import MLP, DenseBlock
from normzoo.models.resnet import RESNET_VARIANTS, BasicBlock, ResNet
from normzoo.models.vgg import VGG, VGG_VARIANTS

__all__ = [
    "ACTIVATIONS",
    "CNN_ARCHS",
    "INIT_SCHEMES",
    "RESNET_VARIANTS",
    "VGG_VARIANTS",
    "BasicBlock",
    "CNNClassifier",
    "DenseBlock",
    "MLP",
    "MLPClassifier",
    "NormClassifier",
    "ResNet",
    "VGG",
    "build_cnn",
    "init_weights",
]
