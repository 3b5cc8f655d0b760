"""Mini-Xception (Arriaga, Ploeger, Valdenegro 2017, "Real-time Convolutional Neural Networks for
Emotion and Gender Classification"): about 58k parameters, no fully connected layer.

Two plain 3x3 convs, four residual modules of depthwise-separable convs (16, 32, 64, 128 channels)
each halving the resolution, then a 3x3 conv to one map per class and global average pooling.
The original used L2 weight regularisation 0.01 on the conv kernels; here that is the
optimizer's weight decay in the recipe.
"""
from torch import nn

from . import register


class SeparableConv(nn.Sequential):
    def __init__(self, c_in, c_out):
        super().__init__(nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False))


class XceptionModule(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))
        self.body = nn.Sequential(
            SeparableConv(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            SeparableConv(c_out, c_out), nn.BatchNorm2d(c_out),
            nn.MaxPool2d(3, stride=2, padding=1),
        )

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class MiniXception(nn.Module):
    def __init__(self, num_classes=7, widths=(16, 32, 64, 128), stem=8):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
            nn.Conv2d(stem, stem, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
        )
        modules, c_in = [], stem
        for c_out in widths:
            modules.append(XceptionModule(c_in, c_out))
            c_in = c_out
        self.modules_ = nn.Sequential(*modules)
        self.head = nn.Conv2d(c_in, num_classes, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.head(self.modules_(self.stem(x)))).flatten(1)


@register
def mini_xception(num_classes=7, **kwargs):
    return MiniXception(num_classes=num_classes, **kwargs)
