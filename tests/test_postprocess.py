import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from adbench.components.postprocess import gaussian_blur, upsample


def test_gaussian_blur_equals_scipy():
    torch.manual_seed(0)
    for shape in [(2, 40, 57), (1, 9, 12), (3, 64, 64)]:
        maps = torch.rand(shape)
        want = np.stack([gaussian_filter(m.numpy().astype(np.float64), sigma=4) for m in maps])
        np.testing.assert_allclose(gaussian_blur(maps, 4.0).numpy(), want, atol=1e-6)


def test_blur_sigma_zero_is_identity_and_mass_preserved():
    maps = torch.rand(2, 16, 16)
    assert torch.equal(gaussian_blur(maps, 0), maps)
    constant = torch.full((1, 20, 20), 3.0)
    torch.testing.assert_close(gaussian_blur(constant, 4.0), constant)


def test_upsample_bilinear_shape_and_constant():
    maps = torch.full((2, 7, 7), 2.0)
    out = upsample(maps, 28)
    assert out.shape == (2, 28, 28) and torch.allclose(out, torch.full_like(out, 2.0))
