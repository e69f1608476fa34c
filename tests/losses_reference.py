"""Straightforward NumPy references of every distillation loss (loops and explicit matrices)."""

import math

import numpy as np


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def normalize(v, axis=-1):
    n = np.sqrt((v ** 2).sum(axis=axis, keepdims=True))
    return np.where(n > 1e-6, v / np.maximum(n, 1e-6), v / 1e-6)


def floored_normalize(v, floor):
    """v_i / sqrt(|v_i|^2 + floor^2 * mean_i |v_i|^2) over all vectors of one image; plain normalize at 0."""
    if not floor:
        return normalize(v)
    n2 = (v ** 2).sum(axis=-1, keepdims=True)
    return v / np.sqrt(n2 + floor ** 2 * n2.mean())


def pixelwise(s, t, tau=1.0, mask=None):
    b, h, w, _ = s.shape
    per_image = []
    for n in range(b):
        total, count = 0.0, 0
        for i in range(h):
            for j in range(w):
                if mask is not None and not mask[n, i, j]:
                    continue
                p, q = softmax(t[n, i, j] / tau), softmax(s[n, i, j] / tau)
                total += np.sum(p * (np.log(p) - np.log(q)))
                count += 1
        per_image.append(tau * tau * total / max(count, 1))
    return np.mean(per_image)


def pool(x, size, mode):
    """Ceil-mode pooling with kernel = stride = size, or (kh, kw) as torch's max_pool2d((kh, kw), ceil_mode=True)."""
    kh, kw = (size, size) if isinstance(size, int) else size
    b, h, w, c = x.shape
    out = np.zeros((b, -(-h // kh), -(-w // kw), c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            patch = x[:, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw]
            out[:, i, j] = patch.max(axis=(1, 2)) if mode == "max" else patch.mean(axis=(1, 2))
    return out


def pairwise(s, t, size=1, mode="max", floor=0.0):
    s, t = pool(s, size, mode), pool(t, size, mode)
    per_image = []
    for n in range(s.shape[0]):
        fs = floored_normalize(s[n].reshape(-1, s.shape[-1]), floor)
        ft = floored_normalize(t[n].reshape(-1, t.shape[-1]), floor)
        a_s, a_t = fs @ fs.T, ft @ ft.T  # explicit N×N similarity matrices
        per_image.append(((a_s - a_t) ** 2).sum() / fs.shape[0] ** 2)
    return np.mean(per_image)


def pairwise_window(s, t, window, floor=0.0):
    r = window // 2
    per_image = []
    for n in range(s.shape[0]):
        fs, ft = floored_normalize(s[n], floor), floored_normalize(t[n], floor)
        h, w = fs.shape[:2]
        total, count = 0.0, 0
        for i in range(h):
            for j in range(w):
                for di in range(-r, r + 1):
                    for dj in range(-r, r + 1):
                        if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                            continue
                        a_s = fs[i, j] @ fs[i + di, j + dj]
                        a_t = ft[i, j] @ ft[i + di, j + dj]
                        total += (a_s - a_t) ** 2
                        count += 1
        per_image.append(total / count)
    return np.mean(per_image)


def cwd(s, t, tau=4.0):
    b, h, w, c = s.shape
    per_image = []
    for n in range(b):
        total = 0.0
        for k in range(c):
            p = softmax(t[n, :, :, k].ravel() / tau)
            q = softmax(s[n, :, :, k].ravel() / tau)
            total += np.sum(p * (np.log(p) - np.log(q)))
        per_image.append(tau * tau * total / c)
    return np.mean(per_image)


def sp(es, et):
    b = es.shape[0]
    g_s, g_t = normalize(es @ es.T), normalize(et @ et.T)
    return ((g_t - g_s) ** 2).sum() / b ** 2


def cc(es, et, kernel="gaussian", gamma=0.4, order=2):
    def corr(e):
        e = normalize(e)
        b = e.shape[0]
        m = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                d = e[i] @ e[j]
                if kernel == "bilinear":
                    m[i, j] = d
                else:
                    m[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * d ** p
                                  for p in range(order + 1))
        return m
    return np.mean((corr(es) - corr(et)) ** 2)


def sq_dist_matrix(e):
    b = e.shape[0]
    return np.array([[np.sum((e[i] - e[j]) ** 2) for j in range(b)] for i in range(b)])


def irg(s_logits, t_logits, es, et, s_pair=None, t_pair=None, wv=0.1, we=5.0, wt=5.0):
    total = wv * np.mean((s_logits - t_logits) ** 2)
    ds, dt = sq_dist_matrix(es), sq_dist_matrix(et)
    total += we * np.mean((ds / ds.max() - dt / dt.max()) ** 2)
    if s_pair is not None:
        ts = np.sum((s_pair[0] - s_pair[1]) ** 2, -1)
        tt = np.sum((t_pair[0] - t_pair[1]) ** 2, -1)
        total += wt * np.mean((ts / ts.max() - tt / tt.max()) ** 2)
    return total


def huber(x, y):
    d = np.abs(x - y)
    return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))


def rkd(es, et, wd=25.0, wa=50.0):
    def dist(e):
        b = e.shape[0]
        d = np.array([[0.0 if i == j else np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        return d / d[d > 0].mean()

    def angles(e):
        b = e.shape[0]
        out = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = e[j] - e[i], e[k] - e[i]
                    out[i, j, k] = normalize(u) @ normalize(v)
        return out
    return wd * huber(dist(es), dist(et)) + wa * huber(angles(es), angles(et))


def adaptive_avg_pool(f, h, w):
    """torch.nn.functional.adaptive_avg_pool2d on B×H×W×C: cell i spans [floor(i·H/h), ceil((i+1)·H/h))."""
    b, height, width, c = f.shape
    out = np.zeros((b, h, w, c), np.float64)
    for i in range(h):
        for j in range(w):
            r0, r1 = (i * height) // h, -((-(i + 1) * height) // h)
            c0, c1 = (j * width) // w, -((-(j + 1) * width) // w)
            out[:, i, j] = f[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


def attention_pooled(s, t, p=2.0):
    """RepDistiller's at_loss: the larger feature map adaptive-average-pooled to the smaller's size."""
    if s.shape[1] > t.shape[1]:
        s = adaptive_avg_pool(s, t.shape[1], t.shape[2])
    elif s.shape[1] < t.shape[1]:
        t = adaptive_avg_pool(t, s.shape[1], s.shape[2])
    return attention(s, t, p)


def attention(s, t, p=2.0):
    def amap(f):
        a = (np.abs(f) ** p).mean(-1).reshape(f.shape[0], -1)
        return normalize(a)
    return np.mean(np.mean((amap(s) - amap(t)) ** 2, -1))
