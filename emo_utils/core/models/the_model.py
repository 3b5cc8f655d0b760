""""TheModel": the small two-conv network published beside ImprovedFER2013Model in the same seed (PyTorch,
FER2013), which its author preferred to the residual net.

As published: Conv2d(1, 64, 3, padding 1), 2x2 max pooling, Conv2d(64, 128, 3, padding 1), 2x2 max
pooling, flatten (128 x 12 x 12 = 18,432 features), Linear(18432, 512), ReLU, dropout 0.5, Linear(512,
classes). About 9.5M parameters, nearly all in the first linear layer; no batch norm.

Kept as in the source, though unusual: there is no ReLU after either conv (max pooling is the only
non-linearity before the dense layers); `conv_relu=True` adds them. An adaptive max pool to the 12x12 map
the source flattens lets other input sizes through; on 48x48 faces it is the identity.
"""
from torch import nn

from . import register


class TheModel(nn.Module):
    def __init__(self, num_classes=7, channels=(64, 128), hidden=512, dropout=0.5, conv_relu=False,
                 feature_size=12):
        super().__init__()
        c1, c2 = channels
        act = (lambda: nn.ReLU(inplace=True)) if conv_relu else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(feature_size),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * feature_size ** 2, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register
def the_model(num_classes=7, **kwargs):
    return TheModel(num_classes=num_classes, **kwargs)
