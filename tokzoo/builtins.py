"""Core's own components, registered through the same hooks as any plugin's.

Each factory is named ``"package.module:attr"`` and imported when it is
first needed (built, or its parameters shown), so `tokzoo list` and `tokzoo
plugins` import no network, dataset or metric code (nor torch). Core's
presets are :mod:`tokzoo.configs`'."""
from __future__ import annotations

from tokzoo import hookimpl

NN, DATA, BENCH = "tokzoo.nn", "tokzoo.data", "tokzoo.bench"


@hookimpl
def tokzoo_register_encoders(register):
    register("conv", f"{NN}.convnets:ConvEncoder", "taming/LlamaGen-style ResNet conv encoder")
    register("openclip", f"{NN}.clip:build_openclip",
             "open_clip image-text model (tiny custom, or a named arch from a local file)",
             config=f"{NN}.clip:openclip_schema")  # the encoder's own signature


@hookimpl
def tokzoo_register_quantizers(register):
    register("vq", f"{NN}.quantizers:VectorQuantizer",
             "nearest-neighbour VQ, l2-normalised low-dim lookup, straight-through")


@hookimpl
def tokzoo_register_decoders(register):
    register("conv", f"{NN}.convnets:ConvDecoder", "taming/LlamaGen-style ResNet conv decoder")


@hookimpl
def tokzoo_register_tokenizers(register):
    register("composed", f"{NN}.composed:build_composed", "generic encoder + quantizer + decoder from the registry")


@hookimpl
def tokzoo_register_datasets(register):
    register("shapes", f"{DATA}.shapes:ShapesDataset",
             "built-in procedural shapes on photo/texture backgrounds, 10 classes, captions")
    register("imagefolder", f"{DATA}.imagefolder:ImageFolderDataset",
             "a folder of images (labels from sub-folders or labels=FILE, captions.jsonl)")
    register("webdataset", f"{DATA}.webdataset:WebDatasetDataset",
             "sharded tar files (WebDataset layout: jpg + cls + txt per key), indexed")
    register("text", f"{DATA}.text:TextDataset",
             "real words in real fonts (word list, DejaVu / Liberation), each word's box: the text-ocr probe")
    register("textfolder", f"{DATA}.text:TextFolderDataset",
             "an image folder with words.json (word boxes + transcriptions): the text-ocr probe on your text")
    register("synthetic", f"{DATA}.synthetic:SyntheticDataset",
             "random smooth images made on the fly (throughput runs; no quality meaning)")


@hookimpl
def tokzoo_register_recipes(register):
    register("clip", "tokzoo.train.recipes:ClipRecipe",
             "contrastive image-text training of an openclip model (the tiny teacher)")
    register("reconstruction", "tokzoo.train.recipes:ReconstructionRecipe",
             "one stage: L1/L2 + LPIPS + PatchGAN (adaptive weight) + quantizer losses")


#: core's metrics: name -> (factory, description)
METRICS = {
    "psnr": (f"{BENCH}.metrics:PSNR", "PSNR on uint8 reconstructions, data_range 255"),
    "ssim": (f"{BENCH}.metrics:SSIM", "SSIM (Gaussian 11x11, sigma 1.5) on uint8, data_range 255"),
    "lpips": (f"{BENCH}.metrics:LPIPSMetric", "LPIPS (AlexNet; metrics.lpips.net=vgg), weights from a local file"),
    "rfid": (f"{BENCH}.fid:RFID", "reconstruction FID, InceptionV3 2015-12-05 weights, TF-compatible resize, float64"),
    "codebook": (f"{BENCH}.metrics:CodebookUsage", "codebook usage and perplexity per level"),
    "edges": (f"{BENCH}.edges:Edges", "edge F1 and gradient error (Sobel on luma): blur cannot hide behind PSNR"),
    "probe": (f"{BENCH}.probes:LinearProbe", "linear-probe top-1 on features from the tokens alone (token_features)"),
    "probe-encoder": (f"{BENCH}.probes:EncoderProbe", "linear-probe top-1 on continuous pre-quantization features"),
    "throughput": (f"{BENCH}.metrics:Throughput",
                   "encode / decode images per second after warm-up; tokens and bits per image"),
    "ar-probe": (f"{BENCH}.generation:ARProbe", "AR probe: a small class-conditional GPT trained on the tokens; "
                 "NLL bits, gFID / judge class accuracy of its samples (opt-in: slow)"),
    "vqa-probe": (f"{BENCH}.understanding:VQAProbe", "VQA probe: questions about each image's attributes (shape, "
                  "colour, position, ...) answered from its tokens by a small transformer; accuracy per attribute"),
    "text-ocr": (f"{BENCH}.text:TextOCR", "text kept? PP-OCRv4 reads each word of the originals and the "
                 "reconstructions (--data text or textfolder:PATH): T-ACC / T-NED by word size (opt-in)"),
}


@hookimpl
def tokzoo_register_metrics(register):
    for name, (factory, description) in METRICS.items():
        register(name, factory, description)
