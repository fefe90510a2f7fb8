"""The default CPU layout trains (issue 31): no channels_last convolutions on a CPU in a network
with a 1x1 convolution.

oneDNN's AVX2 1x1 convolution backward (``jit_avx2_1x1_convolution_bwd_weights``) on NHWC
tensors hangs with 2 threads and corrupts memory with 1 ("double free or corruption", a
segfault in ``loss.backward()``): the plain-torch reproducer for the upstream report is
docs/upstream/onednn_channels_last_hang.md. ``ONEDNN_MAX_CPU_ISA=AVX2`` picks those kernels on
a CPU that has AVX-512 too, so the failure shows on any x86 machine.
"""

from __future__ import annotations

import torch
from torch import nn

from snnrun.run.build import place

from conftest import run_snnrun

SEW = ["model=sew_cnn", "model.channels=4", "T=2", "batch_size=64", "device=cpu", "epochs=1",
       "dataset.train_limit=256", "dataset.test_limit=64", "logger=none"]  # fmt: skip


def test_sew_cnn_trains_on_the_cpu_with_avx2_kernels(tmp_path) -> None:
    """Before: killed by SIGSEGV (or "double free or corruption") in epoch 1's backward, or
    hung until the timeout with 2 threads. After: the epoch ends."""
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    proc = run_snnrun([*SEW, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, check=False,
                      env=env, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final test_acc" in proc.stdout


def contiguous(weight: torch.Tensor) -> bool:
    return weight.stride() == torch.empty(weight.shape).stride()


def test_a_cpu_placed_network_with_a_1x1_convolution_keeps_its_convolutions_contiguous() -> None:
    """Before: ``place`` put them channels_last (NHWC) on a CPU."""
    net = place(
        nn.Sequential(nn.Conv2d(4, 8, 1, stride=2), nn.Conv2d(8, 8, 3)), torch.device("cpu")
    )
    for conv in net:  # a 1x1 kernel is contiguous in both layouts: its strides tell them apart
        assert contiguous(conv.weight), conv


def test_a_network_without_1x1_convolutions_goes_nhwc_on_a_cpu() -> None:
    """NHWC, oneDNN's native layout, where its broken 1x1 kernel never runs: x1.44 train
    samples/s on the snnTorch CSNN (scripts/bench_layout.py --net snntorch)."""
    net = place(nn.Sequential(nn.Conv2d(4, 8, 5), nn.Conv2d(8, 8, 3)), torch.device("cpu"))
    for conv in net:
        assert not contiguous(conv.weight)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
