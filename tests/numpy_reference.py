"""Independent NumPy implementations of the attention blocks (channels_last), used as oracles."""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def hard_swish(z):
    return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0


def conv1x1(x, kernel, bias=None):
    """x (..., Cin) @ kernel (1, 1, Cin, Cout) (+ bias)."""
    y = x @ kernel[0, 0]
    return y if bias is None else y + bias


def batch_norm(x, gamma, beta, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def coord_attention(x, w, directions="hw", training=False, eps=1e-5):
    """Coordinate attention on NHWC ``x`` with weights ``w`` (dict of Keras-layout arrays).

    ``training=True`` normalises with the batch statistics of the N x (H + W) positions of the
    concatenated descriptors, as the PyTorch original does.
    """
    x = x.astype(np.float64)
    parts = {}
    if "h" in directions:
        parts["h"] = conv1x1(x.mean(axis=2, keepdims=True), w["conv1_kernel"], w["conv1_bias"])
    if "w" in directions:
        parts["w"] = conv1x1(x.mean(axis=1, keepdims=True), w["conv1_kernel"], w["conv1_bias"])
    mip = w["conv1_kernel"].shape[-1]
    if training:
        flat = np.concatenate([p.reshape(-1, mip) for p in parts.values()])
        mean, var = flat.mean(axis=0), flat.var(axis=0)
    else:
        mean, var = w["bn_mean"], w["bn_var"]
    out = x
    for key, y in parts.items():
        y = hard_swish(batch_norm(y, w["bn_gamma"], w["bn_beta"], mean, var, eps))
        gate = sigmoid(conv1x1(y, w[f"conv_{key}_kernel"], w[f"conv_{key}_bias"]))
        out = out * gate
    return out


def squeeze_excite(x, w):
    x = x.astype(np.float64)
    s = x.mean(axis=(1, 2), keepdims=True)
    s = np.maximum(conv1x1(s, w["reduce_kernel"], w["reduce_bias"]), 0.0)
    return x * sigmoid(conv1x1(s, w["expand_kernel"], w["expand_bias"]))


def conv2d_same(x, kernel):
    """Stride-1 'same' convolution, NHWC x, HWIO kernel (odd size), no bias."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    n, h, wd, _ = x.shape
    out = np.zeros((n, h, wd, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i : i + h, j : j + wd, :] @ kernel[i, j]
    return out


def cbam(x, w, eps=1e-5):
    x = x.astype(np.float64)

    def mlp(v):
        hidden = np.maximum(conv1x1(v, w["reduce_kernel"], w["reduce_bias"]), 0.0)
        return conv1x1(hidden, w["expand_kernel"], w["expand_bias"])

    channel_gate = sigmoid(
        mlp(x.mean(axis=(1, 2), keepdims=True)) + mlp(x.max(axis=(1, 2), keepdims=True))
    )
    refined = x * channel_gate
    stacked = np.concatenate(
        [refined.max(axis=3, keepdims=True), refined.mean(axis=3, keepdims=True)], axis=3
    )
    spatial = batch_norm(
        conv2d_same(stacked, w["spatial_kernel"]),
        w["bn_gamma"], w["bn_beta"], w["bn_mean"], w["bn_var"], eps,
    )
    return refined * sigmoid(spatial)
