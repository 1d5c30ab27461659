"""Face alignment shared by extraction (`eri.features`) and the MMA face datasets (`eri.mma`).

The similarity transform (rotation, uniform scale, translation; least squares, the 2-D
Umeyama solution) that maps the 5 landmarks [left eye, right eye, nose, left mouth, right mouth]
onto the ArcFace template (InsightFace's 112x112 5-point template scaled to ``size``), applied with
bilinear ``grid_sample``: batched, same code on CPU and GPU. Pixels outside the frame are black.
The choice of template: the papers do not say how faces were cropped; the ArcFace template is the
de-facto standard for 5-point alignment and keeps the whole face (brows to chin) in the crop.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# InsightFace ArcFace template, pixel coordinates in a 112x112 crop:
# left eye, right eye, nose tip, left mouth corner, right mouth corner (left = image left).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template(size: int = 224) -> np.ndarray:
    """The 5-point template for a ``size`` x ``size`` crop, (5, 2) pixels."""
    return ARCFACE_112 * (size / 112.0)


def similarity_matrices(src, dst) -> np.ndarray:
    """Least-squares similarity transforms mapping ``src`` (N, P, 2) onto ``dst`` (P, 2): (N, 2, 3).

    In 2-D the similarity x' = a x - b y + tx, y' = b x + a y + ty has a closed form (Umeyama without
    reflection): with centred points, a = sum(s . d) / sum|s|^2, b = sum(s x d) / sum|s|^2.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim == 2:
        src = src[None]
    sm, dm = src.mean(1, keepdims=True), dst.mean(0)
    s, d = src - sm, dst - dm
    norm = (s**2).sum((1, 2))
    norm = np.where(norm > 0, norm, 1.0)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(1) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / norm
    tx = dm[0] - (a * sm[:, 0, 0] - b * sm[:, 0, 1])
    ty = dm[1] - (b * sm[:, 0, 0] + a * sm[:, 0, 1])
    return np.stack([np.stack([a, -b, tx], 1), np.stack([b, a, ty], 1)], 1)


def align_faces(frames, landmarks, size: int = 224, device=None, as_tensor: bool = False):
    """Align a batch: ``frames`` uint8 (N, H, W, 3) (numpy or tensor), ``landmarks`` (N, 5, 2) pixels
    -> uint8 (N, size, size, 3) numpy, or a tensor on ``device`` with ``as_tensor`` (crops stay on the
    GPU for the extractors). One frame may be shared by all rows when ``frames`` is (H, W, 3)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    n = len(lm)
    if n == 0:
        empty = np.zeros((0, size, size, 3), np.uint8)
        return torch.from_numpy(empty).to(device or "cpu") if as_tensor else empty
    img = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames, device=device)
    if img.ndim == 3:
        img = img.unsqueeze(0).expand(n, *img.shape)
    if img.ndim != 4 or img.shape[-1] != 3 or len(img) != n:
        raise ValueError(f"align_faces: frames must be (N, H, W, 3) with N = {n} landmark sets, got {tuple(img.shape)}")
    h, w = img.shape[1:3]
    m = similarity_matrices(lm, template(size))  # crop <- frame
    full = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], 1)
    inv = np.linalg.inv(full)  # frame <- crop, pixel coordinates (pixel centres at integers)
    # only the part of the frames the crops read from is converted to float: the union of the crops'
    # source regions (their corners bound them; faces in a webcam shot move little). Every bilinear
    # neighbour of a sample lies inside this region unless it lies outside the frame, where the region's
    # edge is the frame's edge, so zeros padding gives exactly what the whole frame would.
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]])
    pts = np.einsum("nij,pj->npi", inv[:, :2], corners)
    x0 = int(np.clip(np.floor(pts[..., 0].min()) - 1, 0, w - 1))
    x1 = int(np.clip(np.ceil(pts[..., 0].max()) + 2, x0 + 1, w))
    y0 = int(np.clip(np.floor(pts[..., 1].min()) - 1, 0, h - 1))
    y1 = int(np.clip(np.ceil(pts[..., 1].max()) + 2, y0 + 1, h))
    wr, hr = x1 - x0, y1 - y0
    # grid_sample's normalised coordinates (align_corners=False): u = (2 x + 1) / W - 1
    out_to_pix = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
    pix_to_in = np.array([[2 / wr, 0, 1 / wr - 1 - 2 * x0 / wr], [0, 2 / hr, 1 / hr - 1 - 2 * y0 / hr], [0, 0, 1]])
    theta = (pix_to_in @ inv @ out_to_pix)[:, :2]
    grid = F.affine_grid(
        torch.as_tensor(theta, dtype=torch.float32, device=img.device), [n, 3, size, size], align_corners=False
    )
    x = img[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out.contiguous() if as_tensor else out.cpu().numpy()


def align_face(image, landmarks, size: int = 224) -> np.ndarray:
    """One face: ``image`` uint8 (H, W, 3) RGB, ``landmarks`` (5, 2) pixels [left eye, right eye, nose,
    left mouth, right mouth] -> uint8 (size, size, 3) aligned crop."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"align_face: image must be (H, W, 3) RGB, got shape {image.shape}")
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"align_face: landmarks must be (5, 2), got shape {lm.shape}")
    return align_faces(image[None], lm[None], size)[0]


