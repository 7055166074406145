"""Stage 1, slides: open a whole-slide image (pyramidal TIFF or a vendor format), check its header
against the documented limits before anything is decoded, choose the pyramid level by physical
spacing, align the tissue mask and lay out the tile grid; write pyramidal TIFFs (synthetic slides)."""
