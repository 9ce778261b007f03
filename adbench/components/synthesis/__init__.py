"""Shared anomaly synthesis for GLASS, DRAEM and CutPaste.

* :mod:`~adbench.components.synthesis.perlin`: Perlin-noise masks with the official DRAEM/GLASS conventions
  (:func:`perlin_masks`), GLASS's union/intersection/single combination inside a foreground
  (:func:`glass_las_masks`);
* :mod:`~adbench.components.synthesis.textures`: anomaly sources — DTD (checksummed download on request), any
  folder of images, and an offline built-in source (:func:`build_texture_source`); every source
  has ``describe()`` for the record;
* :mod:`~adbench.components.synthesis.augment`: GLASS's 3-of-9 and DRAEM's 3-of-10 texture augmentations;
* :mod:`~adbench.components.synthesis.blend`: blending with opacity β, β draws, (un)normalisation;
* :mod:`~adbench.components.synthesis.foreground`: foreground masks, read from a folder or computed from the
  training images by a documented rule;
* :mod:`~adbench.components.synthesis.draem`: DRAEM's synthesis rule on top of the above;
* :mod:`~adbench.components.synthesis.cutpaste`: CutPaste and CutPaste-Scar.

All randomness comes from a ``torch.Generator`` passed in, so a fixed seed gives fixed samples.
"""
