"""Phone deployment: uint8-input TFLite files with TFLite metadata, run by MediaPipe Tasks.

The segmenter is ``tests/data/pennfudan_small/tiny_ca_segmenter.keras`` (MobileNetV2CA 0.35 cut
at stride 16, trained on Penn-Fudan by ``scripts/make_segmenter_fixture.py``: a randomly
initialised network is too chaotic for any int8 file to agree with it). Oracles: the LiteRT
interpreter on the same file (MediaPipe's category mask is its argmax, pixel for pixel), the
Keras model (per-pixel agreement), Python's ``zipfile`` (the labels file), and MediaPipe's own
reading of the metadata (labels, the softmax it applies to confidence masks).
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from helpers import DATA_DIR, calibrate_batchnorm, infer, run_python

pytestmark = [pytest.mark.tflite, pytest.mark.mediapipe]

SEGMENTER_DIR = DATA_DIR / "pennfudan_small"
LABELS = ["background", "person"]


def _png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def pennfudan():
    """``{"calib" | "heldout": (images (N, 96, 96, 3) uint8, masks (N, 96, 96) uint8)}``."""
    split = {}
    for prefix in ("calib", "heldout"):
        files = sorted((SEGMENTER_DIR / "images").glob(f"{prefix}_*.png"))
        images = np.stack([_png(path) for path in files])
        masks = np.stack([_png(SEGMENTER_DIR / "masks" / path.name) for path in files])
        split[prefix] = images, masks
    return split


@pytest.fixture(scope="module")
def segmenter():
    import keras

    return keras.saving.load_model(SEGMENTER_DIR / "tiny_ca_segmenter.keras")


@pytest.fixture(scope="module")
def keras_logits(segmenter, pennfudan):
    from keras_coordatt.applications import preprocess_input

    images, _ = pennfudan["heldout"]
    return infer(segmenter, preprocess_input(images.astype("float32")))


@pytest.fixture(scope="module")
def files(segmenter, pennfudan, tmp_path_factory):
    """The int8 (post-training, calibrated on real images) and float32 uint8-input files of the
    segmenter, with metadata."""
    from keras_coordatt.export import export_tflite, write_metadata

    folder = tmp_path_factory.mktemp("mediapipe")
    calibration, _ = pennfudan["calib"]
    int8 = export_tflite(segmenter, folder / "int8.tflite", "int8", calibration,
                         input_type="uint8")
    float32 = export_tflite(segmenter, folder / "float32.tflite", input_type="uint8")
    for path in (int8, float32):
        write_metadata(path, LABELS, name="tiny_ca_segmenter", author="keras-coordatt tests")
    return {"int8": int8, "float32": float32}


def _interpreter_logits(path, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None])  # the uint8 pixels as they are
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0])
    return np.stack(outputs)


def _mean_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    ious = [np.sum((predicted == c) & (truth == c)) / np.sum((predicted == c) | (truth == c))
            for c in range(len(LABELS))]
    return float(np.mean(ious))


def test_int8_file_takes_uint8_pixels_and_is_all_int8(files):
    from keras_coordatt.export import float_ops, inspect_tflite
    from keras_coordatt.export.litert import LiteRTModel

    ops = inspect_tflite(files["int8"])
    assert (ops[0].name, ops[0].inputs, ops[0].outputs) == ("QUANTIZE", ("uint8",), ("int8",))
    assert (ops[-1].name, ops[-1].outputs) == ("DEQUANTIZE", ("float32",))
    assert float_ops(ops) == []
    assert all(not op.is_float for op in ops[:-1])  # uint8 in, int8 all the way to the output
    detail = LiteRTModel(files["int8"]).input_detail
    assert np.dtype(detail["dtype"]) == np.uint8
    assert detail["quantization"] == (1.0, 0)  # the uint8 value is the pixel value


def test_files_agree_with_the_keras_model(files, pennfudan, keras_logits):
    from keras_coordatt.export import inspect_tflite

    images, truth = pennfudan["heldout"]
    expected = keras_logits.argmax(-1)
    ops = [op.name for op in inspect_tflite(files["float32"])]
    assert ops[0] == "CAST"  # uint8 -> float32, then the normalisation
    float_mask = _interpreter_logits(files["float32"], images).argmax(-1)
    int8_mask = _interpreter_logits(files["int8"], images).argmax(-1)
    assert np.mean(float_mask == expected) >= 0.995
    assert np.mean(int8_mask == expected) >= 0.97
    keras_iou = _mean_iou(expected, truth)
    assert keras_iou > 0.5  # a trained segmenter, not a constant mask
    assert abs(_mean_iou(int8_mask, truth) - keras_iou) < 0.03


@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_mediapipe_image_segmenter_returns_the_interpreters_mask(files, pennfudan, kind):
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    images, _ = pennfudan["heldout"]
    expected = _interpreter_logits(files[kind], images)
    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=files[kind]),
        output_category_mask=True, output_confidence_masks=True,
    )
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        assert segmenter.labels == LABELS  # read from the metadata's labels file
        for image, logits in zip(images, expected, strict=True):
            result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            mask = result.category_mask.numpy_view()
            assert mask.shape[:2] == image.shape[:2]
            np.testing.assert_array_equal(mask.reshape(image.shape[:2]), logits.argmax(-1))
            confidence = np.stack([m.numpy_view().reshape(mask.shape[:2])
                                   for m in result.confidence_masks], -1)
            shifted = np.exp(logits - logits.max(-1, keepdims=True))  # the metadata's softmax
            np.testing.assert_allclose(confidence, shifted / shifted.sum(-1, keepdims=True),
                                       atol=1e-5)


def _classify(path, images: np.ndarray) -> np.ndarray:
    """MediaPipe ImageClassifier's scores (N, classes) and a check of its category names."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path))
    scores = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = result.classifications[0].categories
            assert [c.category_name for c in categories] == [CLASSES[c.index] for c in categories]
            row = np.zeros(len(CLASSES))
            row[[c.index for c in categories]] = [c.score for c in categories]
            scores.append(row)
    return np.stack(scores)


CLASSES = ["cat", "dog", "bird"]


def test_mediapipe_image_classifier_reads_labels_scores_and_normalization(pennfudan, tmp_path):
    """A uint8-input file, and a float-input one whose normalisation MediaPipe takes from the
    metadata (one mean / std value: MediaPipe refuses per-channel ones)."""
    import keras

    from keras_coordatt.applications import MobileNetV2CA, preprocess_input
    from keras_coordatt.export import export_tflite, write_metadata

    images, _ = pennfudan["heldout"]
    keras.utils.set_random_seed(0)
    model = MobileNetV2CA(alpha=0.35, input_shape=(96, 96, 3), classes=3, weights=None)
    calibrate_batchnorm(model, preprocess_input(pennfudan["calib"][0].astype("float32")))
    pixels = export_tflite(model, tmp_path / "uint8.tflite", input_type="uint8")
    write_metadata(pixels, CLASSES, version="1")
    scores = _classify(pixels, images)
    np.testing.assert_allclose(scores, _interpreter_logits(pixels, images), atol=1e-6)
    expected = infer(model, preprocess_input(images.astype("float32")))
    np.testing.assert_allclose(scores, expected, atol=1e-4)

    floats = export_tflite(model, tmp_path / "float.tflite")
    write_metadata(floats, CLASSES, normalization=(127.5, 127.5))
    normalized = ((images.astype("float32") - 127.5) / 127.5)
    np.testing.assert_allclose(_classify(floats, images),
                               _interpreter_logits(floats, normalized), atol=1e-5)


@pytest.mark.qat
def test_qat_model_with_uint8_input_is_all_int8(tmp_path):
    """The normalisation of a QAT model's uint8 input is quantized too (fake-quant nodes)."""
    import keras

    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.export import export_tflite, float_ops, inspect_tflite
    from keras_coordatt.quantization import quantize_model

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(
        keras.layers.Conv2D(8, 3, strides=2)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    pixels = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    qat = quantize_model(model, calibration_data=preprocess_input(pixels))
    path = export_tflite(qat, tmp_path / "qat.tflite", "int8", input_type="uint8")
    ops = inspect_tflite(path)
    assert [op.name for op in ops[:3]] == ["QUANTIZE", "SUB", "MUL"]
    assert ops[0].inputs == ("uint8",) and float_ops(ops) == []
    expected = infer(qat, preprocess_input(pixels))
    got = _interpreter_logits(path, pixels.astype(np.uint8))
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_metadata_contents(files):
    import flatbuffers  # noqa: F401 - the writer's only dependency besides the schema files

    from keras_coordatt.export.metadata import _schema

    with zipfile.ZipFile(files["int8"]) as archive:  # the model file is a valid zip
        assert archive.namelist() == ["labels.txt"]
        assert archive.read("labels.txt").decode().splitlines() == LABELS
        assert archive.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
    tflite = _schema("schema_py_generated")
    meta = _schema("metadata_schema_py_generated")
    data = bytearray(open(files["int8"], "rb").read())
    model = tflite.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert meta.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    info = meta.ModelMetadataT.InitFromPackedBuf(bytearray(buffer), 0)
    assert (info.name, info.author) == (b"tiny_ca_segmenter", b"keras-coordatt tests")
    image = info.subgraphMetadata[0].inputTensorMetadata[0]
    assert image.content.contentProperties.colorSpace == meta.ColorSpaceType.RGB
    assert (list(image.processUnits[0].options.mean), list(image.processUnits[0].options.std)) \
        == ([0.0], [1.0])  # uint8 pixels go in as they are: the file normalises them
    assert (list(image.stats.min), list(image.stats.max)) == ([0.0], [255.0])
    output = info.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.associatedFiles[0].name == b"labels.txt"
    assert output.associatedFiles[0].type == meta.AssociatedFileType.TENSOR_AXIS_LABELS


def test_metadata_writer_does_not_import_mediapipe(files, tmp_path):
    code = (
        "import sys\n"
        "from keras_coordatt.export.metadata import write_metadata\n"
        f"write_metadata({str(files['float32'])!r}, ['a', 'b'], "
        f"output_path={str(tmp_path / 'copy.tflite')!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('mediapipe', 'tensorflow'))))\n"
    )
    result = run_python(code, KERAS_BACKEND="numpy")  # (the TensorFlow backend imports TF)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert zipfile.ZipFile(tmp_path / "copy.tflite").read("labels.txt") == b"a\nb\n"


def test_bad_metadata_arguments(files, tmp_path):
    from keras_coordatt.export import write_metadata

    path = files["float32"]
    with pytest.raises(ValueError, match="labels must be 2"):
        write_metadata(path, ["only one"], output_path=tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="normalises them itself"):
        write_metadata(path, LABELS, normalization=([0], [1]), output_path=tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="A classifier's output is 2-D"):
        write_metadata(path, LABELS, task="classifier", output_path=tmp_path / "x.tflite")
    with pytest.raises(ValueError, match="Unknown activation"):
        write_metadata(path, LABELS, activation="relu", output_path=tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()


def test_bad_image_input_arguments(segmenter, pennfudan, tmp_path):
    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.export import export_tflite

    path = tmp_path / "x.tflite"
    with pytest.raises(ValueError, match="Unknown input_type"):
        export_tflite(segmenter, path, input_type="int8")
    with pytest.raises(ValueError, match="exclude each other"):
        export_tflite(segmenter, path, "int8", np.zeros((1, 96, 96, 3)), int8_io=True,
                      input_type="uint8")
    with pytest.raises(ValueError, match="needs input_type='uint8'"):
        export_tflite(segmenter, path, normalization=([0], [1]))
    with pytest.raises(ValueError, match="std must be positive"):
        export_tflite(segmenter, path, input_type="uint8", normalization=(0, [1, 0, 1]))
    preprocessed = preprocess_input(pennfudan["calib"][0].astype("float32"))
    with pytest.raises(ValueError, match="raw RGB images"):
        export_tflite(segmenter, path, "int8", preprocessed, input_type="uint8")
    assert not path.exists()
