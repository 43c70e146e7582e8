"""Small test models mixing every layer type the estimators handle."""

import itertools

import torch
import torch.nn.functional as F
from torch import nn

N_PIX = 36
N_TOK = 5
VOCAB = 12


class Mixed(nn.Module):
    """Conv2d (+grouped, strided), BatchNorm, Embedding, MultiheadAttention, LayerNorm, Conv1d,
    token-wise Linear, GroupNorm and Linear layers, with an in-place ReLU. Input: (N, 36 + 5)
    floats, the first 36 a 6x6 image, the last 5 token ids."""

    def __init__(self, n_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, groups=2, padding=1, padding_mode="reflect")
        self.emb = nn.Embedding(VOCAB, 8, padding_idx=0)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln = nn.LayerNorm(8)
        self.tok = nn.Linear(8, 8)
        self.conv1d = nn.Conv1d(8, 4, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.fc1 = nn.Linear(4 * 3 * 3 + 8 + 4, 16)
        self.act2 = nn.Tanh()
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x):
        n = x.shape[0]
        img = x[:, :N_PIX].reshape(n, 1, 6, 6)
        h = self.conv2(self.act(self.bn(self.conv(img)))).flatten(1)
        ids = x[:, N_PIX:].long()
        e = self.emb(ids)
        a, _ = self.attn(e, e, e)
        e = self.ln(e + a)
        t = self.tok(e)                                   # Linear on (N, T, 8)
        c = self.gn(self.conv1d(t.transpose(1, 2)))       # (N, 4, T)
        z = torch.cat([h, F.relu(t).mean(1), c.mean(-1)], 1)
        return self.fc2(self.act2(self.fc1(z)))


def mixed_data(n: int = 24, seed: int = 0, n_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, N_PIX, generator=g)
    ids = torch.randint(0, VOCAB, (n, N_TOK), generator=g).double()
    ids[0, :2] = 3.0                                     # a repeated id within one sample
    x = torch.cat([img.double(), ids], 1)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y


def trained_bn_mixed(seed: int = 0) -> Mixed:
    torch.manual_seed(seed)
    model = Mixed().double()
    x, _ = mixed_data(64, seed=seed + 1)
    model.train()
    with torch.no_grad():
        model(x)                                         # non-trivial running statistics
    for p in model.parameters():                         # BN affine away from (1, 0)
        p.data.add_(0.05 * torch.randn_like(p))
    return model


def mlp(widths=(10, 16, 8, 3), act=nn.ReLU) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def inverse_cdf(p, generator):
    """Naive reference of the sampled Fisher's labels: a loop over rows of p (R, C).

    u_r ~ U[0, 1) in float64, one per row drawn together; label = how many float64 cumulative
    probabilities are ≤ u_r · Σ p_r (the first class whose cumulative probability exceeds it).
    """
    u = torch.rand(p.shape[0], 1, generator=generator, dtype=torch.float64)
    labels = []
    for row, ur in zip(p, u):
        cdf = row.double().cumsum(0)
        labels.append(min(int((cdf <= ur * cdf[-1]).sum()), len(row) - 1))
    return torch.tensor(labels)
