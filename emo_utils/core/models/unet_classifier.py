"""UNet-style classifier: an encoder-decoder with skip connections and a classification head on the
decoder's output, after the seed that reported 77% test accuracy on an 8-class dataset (RAVDESS speech,
1-D audio features) with 99.7% train accuracy.

The seed's network is 1-D: three encoder levels of "double convs" (conv, dropout, batch norm, ReLU, twice;
16, 32, 64 channels), two decoder levels that upsample with a transposed conv and concatenate the encoder
features of the same resolution, a 1x1 conv to one map per class, and the mean over positions (global
average pooling). Here it is the same in 2-D on 48x48 faces:

    enc1 (48x48, w1) -> pool -> enc2 (24x24, w2) -> pool -> bottleneck (12x12, w3)
    -> up to 24x24, concat enc2 -> dec2 (w2) -> up to 48x48, concat enc1 -> dec1 (w1)
    -> 1x1 conv to classes -> global average pooling -> logits

What we changed or had to choose:
- 3x3 kernels with padding 1 (the seed: 1-D kernels of 5 with padding 1, which shrink each feature map and
  make it zero-pad the upsampled maps to fit the skips; it also max-pools the bottleneck once more first).
- Batch norm keeps running statistics (the seed's BatchNorm1d(track_running_stats=False) normalises test
  batches by their own statistics, so a prediction depends on the rest of its batch).
- The seed applies softmax before nn.CrossEntropyLoss (a double softmax); we return logits.
- Dropout 0.3 after the first and 0.5 after the second conv of every double conv, as published.
- Widths (w1, w2, w3): the seed's are (16, 32, 64). We default to (8, 16, 32): a quarter of the FLOPs
  (28 vs 112 MFLOPs) and a third of the time, 0.3-0.45 s per training batch of 64 on one shared CPU core
  (2-3 minutes per FER2013 epoch), so a 10-minute CPU budget sees several epochs. widths=(16, 32, 64)
  gives the seed's sizes.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import register


class Dropout(nn.Dropout):
    """Element-wise dropout, as nn.Dropout. On CPU the mask is drawn with torch.rand, about 3x faster than
    the bernoulli_ inside F.dropout, which took a third of this net's training step at 48x48 (measured)."""

    def forward(self, x):
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return x * torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))


class DoubleConv(nn.Sequential):
    def __init__(self, c_in, c_out, dropout=(0.3, 0.5)):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), Dropout(dropout[0]), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), Dropout(dropout[1]), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample by 2 with a transposed conv, concatenate the skip, double conv."""

    def __init__(self, c_in, c_skip, c_out, dropout):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_skip, 2, stride=2)
        self.conv = DoubleConv(2 * c_skip, c_out, dropout)

    def forward(self, x, skip):
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # odd input sizes: pad the upsampled map to the skip's size
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([x, skip], dim=1))


class UNetClassifier(nn.Module):
    def __init__(self, num_classes=7, widths=(8, 16, 32), dropout=(0.3, 0.5)):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = DoubleConv(1, w1, dropout)
        self.enc2 = DoubleConv(w1, w2, dropout)
        self.bottleneck = DoubleConv(w2, w3, dropout)
        self.pool = nn.MaxPool2d(2)
        self.dec2 = Up(w3, w2, w2, dropout)
        self.dec1 = Up(w2, w1, w1, dropout)
        self.head = nn.Conv2d(w1, num_classes, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        skip1 = self.enc1(x)
        skip2 = self.enc2(self.pool(skip1))
        x = self.bottleneck(self.pool(skip2))
        x = self.dec1(self.dec2(x, skip2), skip1)
        return self.gap(self.head(x)).flatten(1)


@register
def unet_classifier(num_classes=7, **kwargs):
    return UNetClassifier(num_classes=num_classes, **kwargs)
