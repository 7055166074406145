"""Stage 4, serving: what a trained model is and how one case becomes a prediction. The bundle
format (``bundle``), preprocessing of RNA and clinical inputs (``preprocess``), the model directory
(``modeldir``), grand-challenge's sockets (``sockets``) and one case end to end (``predict``)."""
