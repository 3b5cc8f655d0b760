"""The 3-conv CNN seed: three conv layers, each with ReLU and 2x2 max pooling, then fully connected layers
with dropout (Adam 1e-3, cross-entropy, batch 32, 20 epochs; 52.3% published on another dataset).

The seed describes the shape, not the sizes. Guessed, as the common pattern for 48x48 faces: 3x3 convs with
padding 1 and 32, 64, 128 channels (48 -> 24 -> 12 -> 6), flatten 128 x 6 x 6, Linear(4608, 256), ReLU,
dropout 0.5, Linear(256, classes). About 1.3M parameters. An adaptive max pool to the 6x6 map lets other
input sizes through; on 48x48 faces it is the identity.
"""
from torch import nn

from . import register


class CNN3(nn.Module):
    def __init__(self, num_classes=7, channels=(32, 64, 128), hidden=256, dropout=0.5, feature_size=6):
        super().__init__()
        layers, c_in = [], 1
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(feature_size))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * feature_size ** 2, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register
def cnn3(num_classes=7, **kwargs):
    return CNN3(num_classes=num_classes, **kwargs)
