"""The predict app, `emo-predict`: images, folders, zips, videos and a camera classified (cli, inputs, video),
faces found and aligned (faces, detectors), followed across frames (tracking), a trained model or its ONNX
export as one classifier (classifier, export). It imports the core only (and paths, to find a model by name).
"""
