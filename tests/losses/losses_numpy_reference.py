"""Plain-numpy versions of the SSL losses, written from the papers' formulas, loop by loop.

They share no code with medssl.losses, so a test comparing the two checks the implementation
against an independent reading of the paper.
"""

from __future__ import annotations

import numpy as np


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ntxent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    u = unit(np.concatenate([z1, z2]).astype(np.float64))
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        sims = [u[i] @ u[k] / temperature for k in range(2 * n)]
        denominator = sum(np.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -np.log(np.exp(sims[positive]) / denominator)
    return total / (2 * n)


def infonce_queue(q: np.ndarray, k: np.ndarray, queue: np.ndarray, temperature: float) -> float:
    q, k = unit(q.astype(np.float64)), unit(k.astype(np.float64))
    total = 0.0
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue.astype(np.float64) @ q[i]]) / temperature
        total += -(logits[0] - np.log(np.exp(logits).sum()))
    return total / len(q)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (unit(a.astype(np.float64)) * unit(b.astype(np.float64))).sum(axis=1)


def byol(p1, p2, z1, z2) -> float:
    return float(np.mean(2 - 2 * cosine(p1, z2)) + np.mean(2 - 2 * cosine(p2, z1)))


def simsiam(p1, p2, z1, z2) -> float:
    return float(-np.mean(cosine(p1, z2)) / 2 - np.mean(cosine(p2, z1)) / 2)


def barlow(z1: np.ndarray, z2: np.ndarray, lambd: float, eps: float = 1e-5) -> float:
    z1, z2 = z1.astype(np.float64), z2.astype(np.float64)
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + eps)  # numpy var: biased, as batch norm
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + eps)
    c = a.T @ b / n
    loss = 0.0
    for i in range(d):
        for j in range(d):
            loss += (1 - c[i, i]) ** 2 if i == j else lambd * c[i, j] ** 2
    return loss


def vicreg_terms(z1: np.ndarray, z2: np.ndarray, gamma=1.0, eps=1e-4) -> dict[str, float]:
    z1, z2 = z1.astype(np.float64), z2.astype(np.float64)
    n, d = z1.shape
    invariance = np.mean((z1 - z2) ** 2)

    def variance(z):
        std = np.sqrt(z.var(0, ddof=1) + eps)
        return np.mean(np.maximum(0.0, gamma - std))

    def covariance(z):
        centred = z - z.mean(0)
        cov = centred.T @ centred / (n - 1)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    return {"invariance": invariance, "variance": variance(z1) + variance(z2),
            "covariance": covariance(z1) + covariance(z2)}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def dino(student: list[np.ndarray], teacher: list[np.ndarray], center: np.ndarray, teacher_temp: float,
         student_temp: float) -> float:
    total, terms = 0.0, 0
    for a, t in enumerate(teacher):
        target = softmax((t.astype(np.float64) - center) / teacher_temp)
        for b, s in enumerate(student):
            if a == b:
                continue
            log_p = np.log(softmax(s.astype(np.float64) / student_temp))
            total += np.mean(np.sum(-target * log_p, axis=1))
            terms += 1
    return total / terms


def nnclr(z1, z2, p1, p2, support: np.ndarray, temperature: float) -> float:
    def neighbours(z):
        sims = unit(z.astype(np.float64)) @ support.T
        return support[np.argmax(sims, axis=1)]

    def contrast(nn_rows, p):
        logits = nn_rows @ unit(p.astype(np.float64)).T / temperature
        return np.mean([-(logits[i, i] - np.log(np.exp(logits[i]).sum())) for i in range(len(logits))])

    return 0.5 * (contrast(neighbours(z1), p2) + contrast(neighbours(z2), p1))


def sinkhorn(scores: np.ndarray, iterations: int, epsilon: float) -> np.ndarray:
    q = np.exp(scores.astype(np.float64) / epsilon).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def swav(scores: list[np.ndarray], temperature: float, iterations: int, epsilon: float, assign: int = 2) -> float:
    total = 0.0
    for a in range(assign):
        q = sinkhorn(scores[a], iterations, epsilon)
        sub = 0.0
        for b, s in enumerate(scores):
            if b == a:
                continue
            log_p = np.log(softmax(s.astype(np.float64) / temperature))
            sub -= np.mean(np.sum(q * log_p, axis=1))
        total += sub / (len(scores) - 1)
    return total / assign
