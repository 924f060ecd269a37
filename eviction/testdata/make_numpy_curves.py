#!/usr/bin/env python3
"""Writes the numpy-made budget curves that npy_test.go reads (run with numpy installed,
from eviction/testdata). Entry [i, l, h] = (i+1)/100 + 0.001*l - 0.0005*h, clamped to [0, 1],
shape (99, 2, 3), saved with np.save exactly as the LU-KV step2 script saves its curves."""
import numpy as np

i, l, h = np.meshgrid(np.arange(99), np.arange(2), np.arange(3), indexing="ij")
curve = np.clip((i + 1) / 100 + 0.001 * l - 0.0005 * h, 0, 1)
np.save("numpy_f8.npy", curve)                           # float64, as the authors' curves
np.save("numpy_f4.npy", curve.astype(np.float32))        # float32, as kvpress's fallback
np.save("numpy_fortran.npy", np.asfortranarray(curve))   # must be rejected
np.save("numpy_bigendian.npy", curve.astype(">f8"))      # must be rejected
np.save("numpy_shape2d.npy", curve[:, 0, :])             # must be rejected
