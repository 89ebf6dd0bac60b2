"""Train TinyNet in your own loop (plain PyTorch) and save its state_dict: `python train_mynet.py tiny.pt`.

The beats come from ecgbench's smoke split for convenience; any pipeline that yields 280-sample MIT-BIH
beats in [0, 1] does as well.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from mynet import TinyNet  # noqa: E402

import ecgbench  # noqa: E402

data = ecgbench.load_split("mitbih", profile="smoke")
x, y = torch.as_tensor(data.train.x)[:, None], torch.as_tensor(data.train.y)
torch.manual_seed(0)
net = TinyNet(len(data.classes))
opt = torch.optim.Adam(net.parameters(), 3e-3)
for step in range(300):
    batch = torch.randint(0, len(y), (64,))
    loss = F.cross_entropy(net(x[batch]), y[batch])
    opt.zero_grad()
    loss.backward()
    opt.step()
torch.save(net.state_dict(), sys.argv[1] if len(sys.argv) > 1 else "tiny.pt")
print(f"trained TinyNet: last loss {loss.item():.3f}")
