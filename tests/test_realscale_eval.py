"""Real-scale evaluation (``tbcm eval DIR --reference ROOT``): the FID Inception network, the CLIP
score on a local folder, the student image generators and the MJHQ-30k layout, on tiny local
stand-ins (random-weight CLIP and Inception, a random tbcm student, nine small images)."""

import json
import shutil
import string

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchmetrics.image.fid import FrechetInceptionDistance

from tbcm.cli import main
from tbcm.errors import UserError
from tbcm.evaluation.inception import (
    NUM_CLASSES,
    InceptionV3Features,
    load_inception,
    random_inception_state_dict,
    resize_bilinear_tf1,
    save_inception_weights,
)
from tbcm.evaluation.realscale import (
    clip_loader,
    format_realscale_table,
    read_reference,
)
from tbcm.generate import load_image_generator
from tbcm.models.bundle import Bundle, ModelMeta, save_bundle
from tbcm.models.student import LogvarHead

from .conftest import assert_cli_error, tiny_encoder, tiny_network

CATEGORIES = ("animals", "people", "plants")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A student, an MJHQ-layout folder, an Inception weights file and a CLIP folder."""
    root = tmp_path_factory.mktemp("realscale")
    # the student: a tiny random tbcm student (8x8 grayscale) that knows the digit prompts
    net, enc = tiny_network(guidance=True, seed=1), tiny_encoder()
    meta = ModelMeta(kind="student", sigma_d=0.5, channels=1, image_size=8, network=net.config.to_dict(),
                     prompt_encoder=enc.config(), extra={"default_cfg_scale": 4.5, "shift": 2.5})
    student = save_bundle(Bundle(meta, net, enc, LogvarHead()), root / "run" / "student")
    # the reference: 9 images in 3 categories, ids not in category order, one .png, one not square
    ref = root / "mjhq"
    rng = np.random.default_rng(0)
    meta_data = {}
    for i in range(9):
        image_id, category = f"{(i * 7) % 9:02d}ab", CATEGORIES[i % 3]
        (ref / category).mkdir(parents=True, exist_ok=True)
        size = (24, 16) if i == 4 else (16, 16)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(ref / category / f"{image_id}{'.png' if i == 2 else '.jpg'}")
        meta_data[image_id] = {"prompt": f"a handwritten digit {i}", "category": category, "extra": i}
    (ref / "meta_data.json").write_text(json.dumps(meta_data))
    inception = save_inception_weights(root / "pt_inception-2015-12-05-standin.pth")
    return {"student": student, "run": root / "run", "reference": ref, "inception": inception,
            "clip": _tiny_clip(root / "clip")}


def _tiny_clip(path):
    """A random CLIP (hidden 32, one layer, 32px images, patch 8) with a character-level CLIP BPE
    tokenizer and a CLIP image processor, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:  # transformers 5 without torchvision: the PIL image processor
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    chars = string.ascii_lowercase + string.digits
    vocab = {w: i for i, w in enumerate(["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path


# The parameter names of torch-fidelity's FeatureExtractorInceptionV3 (= pytorch-fid's FID
# Inception = torchvision's Inception3 without aux logits, 1008 classes): block -> its ConvBN layers.
FIDELITY_LAYOUT = {
    **{name: [""] for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")},
    **{name: ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
              "branch_pool"] for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d")},
    "Mixed_6a": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    **{name: ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
              "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
       for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")},
    "Mixed_7a": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    **{name: ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
              "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"] for name in ("Mixed_7b", "Mixed_7c")},
}


def test_inception_state_dict_has_the_torch_fidelity_layout():
    expected = {"fc.weight", "fc.bias"}
    for block, layers in FIDELITY_LAYOUT.items():
        for layer in layers:
            prefix = f"{block}.{layer}." if layer else f"{block}."
            expected |= {prefix + "conv.weight"} | {prefix + f"bn.{p}" for p in ("weight", "bias", "running_mean",
                                                                                  "running_var")}
    state = random_inception_state_dict()
    assert {k for k in state if not k.endswith("num_batches_tracked")} == expected
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (NUM_CLASSES, 2048)
    # torchvision's Inception3 (aux_logits=False, 1008 classes) has 23,850,960 parameters
    assert sum(p.numel() for p in InceptionV3Features().parameters()) == 23_850_960


def test_tf1_bilinear_resize():
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    # TF 1.x: output pixel i samples the input at i * in / out, the upper neighbour clamped
    out = resize_bilinear_tf1(x, 4)
    assert torch.equal(out[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    assert torch.equal(out[0, 0, :, 0], torch.tensor([0.0, 10.0, 20.0, 20.0]))
    y = torch.rand(1, 3, 299, 299)
    assert torch.equal(resize_bilinear_tf1(y, 299), y)


def test_inception_features_and_fid_of_a_set_with_itself(stand_ins):
    model = load_inception(stand_ins["inception"])
    assert model.num_features == 2048 and not model.training
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (6, 3, 20, 20), generator=gen, dtype=torch.uint8)
    feats = model(real)
    assert feats.shape == (6, 2048) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    assert torch.equal(model(real), feats)  # deterministic
    assert torch.allclose(model(real[:2]), feats[:2], rtol=1e-5, atol=1e-6)  # no batch dependence
    assert feats.std(0).mean() > 0  # the images differ, so do their features
    fid = FrechetInceptionDistance(feature=model, reset_real_features=False)
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(255 - real, real=False)  # inverted images: another set
    other = float(fid.compute())
    assert other > 0 and abs(same) < 1e-4 * other, (same, other)


def test_bad_inception_weights_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_inception(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable weights file"):
        load_inception(tmp_path / "junk.pth")
    state = random_inception_state_dict()
    state["fc.weight"] = state["fc.weight"][:1000]  # torchvision's 1000 classes, not the FID graph's 1008
    del state["Mixed_7c.branch_pool.bn.running_var"]
    state["AuxLogits.fc.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(UserError) as err:
        load_inception(tmp_path / "other.pth")
    msg = str(err.value)
    assert "\n" not in msg and "Mixed_7c.branch_pool.bn.running_var" in msg and "AuxLogits.fc.weight" in msg
    assert "fc.weight (1000, 2048) (expected (1008, 2048))" in msg and "pt_inception" in msg
    # a weights file without BatchNorm step counters (as the converted TF weights) loads
    state = {k: v for k, v in random_inception_state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert torch.equal(load_inception(tmp_path / "old.pth").Mixed_5b.branch1x1.conv.weight,
                       state["Mixed_5b.branch1x1.conv.weight"])


def test_clip_loader_truncates_long_prompts_and_returns_embeddings(stand_ins):
    model, processor = clip_loader(stand_ins["clip"])()
    text = processor(text=["a handwritten digit 3", "a"], return_tensors="pt", padding=True)
    assert text["input_ids"].shape == (2, 16) and int(text["input_ids"][0, -1]) == 1  # ends in <|endoftext|>
    assert model.get_text_features(text["input_ids"], text["attention_mask"]).shape == (2, 16)
    pixels = processor(images=[torch.zeros(3, 8, 8, dtype=torch.uint8)], return_tensors="pt", padding=True)
    assert model.get_image_features(pixels["pixel_values"]).shape == (1, 16)
    with pytest.raises(UserError, match="no config.json"):
        clip_loader(stand_ins["reference"])


def test_tbcm_generator_is_seeded_per_image(stand_ins):
    gen = load_image_generator(stand_ins["student"], steps=2, cfg_scale=None, shift=None)
    assert gen.resolution == 8 and gen.cfg_scale == 4.5
    prompts = ["a handwritten digit 1", "a handwritten digit 2", "a handwritten digit 3"]
    images = gen.generate(prompts, [5, 6, 7])
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 8, 8)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # gray
    alone = gen.generate(prompts[1:2], [6])  # its own prompt and seed decide an image, not its batch
    assert (alone[0].int() - images[1].int()).abs().max() <= 1
    assert not torch.equal(gen.generate(prompts[:1], [6]), images[:1])  # another seed, another image
    with pytest.raises(UserError, match="'cat'"):
        gen.check_prompts(["a cat"])
    assert gen.family == "tbcm"
    # a student folder of a family tbcm does not know is a one-line error
    fake = stand_ins["student"].parent / "fake"
    shutil.copytree(stand_ins["student"], fake)
    meta = yaml.safe_load((fake / "model.yaml").read_text())
    (fake / "model.yaml").write_text(yaml.safe_dump({**meta, "family": "nope"}))
    with pytest.raises(UserError, match="'nope'.*known families"):
        load_image_generator(fake, 1, None, None)


def test_reference_layout(stand_ins, tmp_path):
    ref = read_reference(stand_ins["reference"], n=4)
    assert ref.ids == ["00ab", "01ab", "02ab", "03ab"]  # the first n in sorted-id order
    assert ref.prompts == ["a handwritten digit 0", "a handwritten digit 4", "a handwritten digit 8",
                           "a handwritten digit 3"]
    assert ref.paths[0].parent.name == "animals" and ref.paths[1].parent.name == "people"
    every = read_reference(stand_ins["reference"])
    assert len(every.ids) == 9 and every.paths[5].suffix == ".png"  # .jpg or .png
    with pytest.raises(UserError, match="--n 10 but .* only 9"):
        read_reference(stand_ins["reference"], n=10)
    (tmp_path / "meta_data.json").write_text(json.dumps({"a": {"prompt": "x", "category": "c"},
                                                         "b": {"prompt": "y", "category": "c"}}))
    with pytest.raises(UserError, match=r"2 of the 2 reference images are missing, e\.g\. .*c/a\.jpg"):
        read_reference(tmp_path)
    (tmp_path / "meta_data.json").write_text(json.dumps({"a": {"prompt": "x"}, "b": {}}))
    with pytest.raises(UserError, match="entry 'a' needs"):
        read_reference(tmp_path)


def test_eval_reference_json_is_reproducible(stand_ins, capsys):
    base = ["eval", str(stand_ins["run"]), "--reference", str(stand_ins["reference"]), "--inception",
            str(stand_ins["inception"]), "--clip", str(stand_ins["clip"]), "--n", "8", "--batch", "3",
            "--seed", "2", "--no-progress", "--json"]
    assert main([*base, "--steps", "1,2"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out
    first = json.loads(out)
    assert set(first) == {"student", "reference", "cfg_scale", "seed", "family", "resolution"}
    assert first["reference"] == {"root": str(stand_ins["reference"]), "images": 8}
    assert first["cfg_scale"] == 4.5 and first["seed"] == 2 and first["family"] == "tbcm"
    assert first["resolution"] == 8 and set(first["student"]) == {"1", "2"}
    for scores in first["student"].values():
        assert set(scores) == {"fid", "clip_score"}
        assert np.isfinite(scores["fid"]) and scores["fid"] > 0
        assert 0 <= scores["clip_score"] <= 100
    # the CLIP score by hand: 100 x cosine of CLIP's image and text embeddings, floored at 0, mean
    from transformers import CLIPModel, CLIPProcessor

    ref = read_reference(stand_ins["reference"], n=8)
    images = load_image_generator(stand_ins["run"] / "student", 1).generate(ref.prompts, [2 + i for i in range(8)])
    model = CLIPModel.from_pretrained(str(stand_ins["clip"]), local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(str(stand_ins["clip"]), local_files_only=True)
    with torch.no_grad():
        inputs = processor(text=ref.prompts, images=list(images), return_tensors="pt", padding=True,
                           truncation=True, max_length=model.config.text_config.max_position_embeddings)
        out = model(**inputs)
    img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    by_hand = float((100 * (img * txt).sum(-1)).clamp(min=0).mean())
    assert first["student"]["1"]["clip_score"] == pytest.approx(by_hand, rel=1e-4, abs=1e-4)
    # a rerun gives the same numbers (the 2-step scores do not depend on the 1-step run before them)
    assert main([*base, "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["student"]["2"] == first["student"]["2"]


def test_table_format():
    result = {"student": {"1": {"fid": 12.5, "clip_score": 30.25}}, "reference": {"root": "mjhq", "images": 30000},
              "cfg_scale": 4.5, "seed": 0, "family": "tbcm", "resolution": 1024}
    table = format_realscale_table(result)
    assert "12.5000" in table and "30.2500" in table and "30000 reference images from mjhq at 1024px" in table


def test_eval_reference_bad_input_exits_2_with_one_line(stand_ins, tmp_path, capsys):
    run, ref, inc, clip = (str(stand_ins[k]) for k in ("run", "reference", "inception", "clip"))
    assert "needs --inception" in assert_cli_error(["eval", run, "--reference", ref, "--clip", clip], capsys)
    assert "needs --clip" in assert_cli_error(["eval", run, "--reference", ref, "--inception", inc], capsys)
    assert "add --reference" in assert_cli_error(["eval", run, "--inception", inc], capsys)
    full = ["--inception", inc, "--clip", clip]
    (tmp_path / "empty").mkdir()
    err = assert_cli_error(["eval", run, "--reference", str(tmp_path / "empty"), *full], capsys)
    assert "no meta_data.json" in err and "<category>/<id>.jpg" in err
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    err = assert_cli_error(["eval", run, "--reference", ref, "--inception", str(bad), "--clip", clip], capsys)
    assert "does not hold the FID InceptionV3 weights" in err
    assert "no config.json" in assert_cli_error(["eval", run, "--reference", ref, "--inception", inc,
                                                  "--clip", str(tmp_path)], capsys)
    assert "--n" in assert_cli_error(["eval", run, "--reference", ref, *full, "--n", "1"], capsys)
    assert "--batch" in assert_cli_error(["eval", run, "--reference", ref, *full, "--batch", "0"], capsys)
    assert "--teacher" in assert_cli_error(["eval", run, "--reference", ref, *full, "--teacher", "4"], capsys)


def test_eval_reference_with_fidelity_adds_the_student_against_its_teacher(stand_ins, capsys):
    argv = ["eval", str(stand_ins["run"]), "--reference", str(stand_ins["reference"]), "--inception",
            str(stand_ins["inception"]), "--clip", str(stand_ins["clip"]), "--n", "2", "--steps", "1",
            "--seed", "2", "--no-progress", "--fidelity", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    fid = r["fidelity"]
    # the run has no config.yaml: its teacher is the built-in one; the sampler the student saved (legacy keys)
    assert fid["images"] == 2 and fid["features"] == "FID Inception pool3" and fid["cfg_scale"] == 4.5
    assert fid["teacher"]["steps"] == 16 and fid["teacher"]["guidance_interval"] == []
    e = fid["steps"]["1"]
    assert np.isfinite(e["fid_to_teacher"]) and e["latent_mse"] > 0 and "label_agreement" not in e
    assert "fidelity to the teacher as copied" in format_realscale_table(r)
    assert "--split" in assert_cli_error([*argv[:-1], "--split", "tune"], capsys)
