"""Model X and Model Y: the two custom CNNs of the ensembling seed (SGD, plateau LR, heavy augmentation),
combined there by a weighted average of their softmax outputs.

The seed describes Model X as the deeper one (several conv blocks with batch norm, ReLU, max pooling and
dropout) and Model Y as the simpler one (fewer conv layers). Widths, block counts and the dense head are
our reading of that description; they are kwargs, so a recipe can change them.
"""
from torch import nn

from . import register


def conv_bn_relu(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def dense_head(c_in, hidden, dropout, num_classes):
    # Adaptive pooling to 3x3 keeps the head's size fixed for 40 or 48 px inputs.
    return nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(c_in * 9, hidden),
                         nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class ModelX(nn.Module):
    """Four blocks of (conv-BN-ReLU) x 2, max pooling and dropout, then a dense head."""

    def __init__(self, num_classes=7, widths=(32, 64, 128, 256), dropout=0.25, hidden=256, head_dropout=0.5):
        super().__init__()
        layers, c_in = [], 1
        for width in widths:
            layers += conv_bn_relu(c_in, width) + conv_bn_relu(width, width)
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = dense_head(c_in, hidden, head_dropout, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class ModelY(nn.Module):
    """Three single conv-BN-ReLU layers with max pooling, then a dense head."""

    def __init__(self, num_classes=7, widths=(32, 64, 128), hidden=128, head_dropout=0.5):
        super().__init__()
        layers, c_in = [], 1
        for width in widths:
            layers += conv_bn_relu(c_in, width) + [nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = dense_head(c_in, hidden, head_dropout, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


@register
def model_x(num_classes=7, **kwargs):
    return ModelX(num_classes=num_classes, **kwargs)


@register
def model_y(num_classes=7, **kwargs):
    return ModelY(num_classes=num_classes, **kwargs)
