"""Core's datasets, registered through the same hook as any plugin's."""
from __future__ import annotations

from tokzoo import hookimpl
from tokzoo.data.imagefolder import ImageFolderDataset
from tokzoo.data.shapes import ShapesDataset
from tokzoo.data.synthetic import SyntheticDataset
from tokzoo.data.webdataset import WebDatasetDataset


@hookimpl
def tokzoo_register_datasets(register):
    register("shapes", ShapesDataset, "built-in procedural shapes on photo/texture backgrounds, 10 classes, captions")
    register("imagefolder", ImageFolderDataset, "a folder of images (labels from sub-folders or labels=FILE, captions.jsonl)")
    register("webdataset", WebDatasetDataset, "sharded tar files (WebDataset layout: jpg + cls + txt per key), indexed")
    register("synthetic", SyntheticDataset, "random smooth images made on the fly (throughput runs; no quality meaning)")
