"""Stage 2, features: tiles -> embeddings. The encoder registry (``encoders``), strict weights
(``weights``), device and precision (``device``), the runtime ``TileEncoder``, our ViT (``vit``),
the typed feature request (``request``), the extraction pipeline (``extract``) and the HDF5 feature
files (``h5``)."""
