import os

import pytest
import torch

from texttune.trainers import files, formats, templates


@pytest.mark.parametrize("name", ["my-concept", "tok_1", "a.b", "X"])
def test_good_names_pass(name):
    assert files.check_name(name, "Token name") == name


@pytest.mark.parametrize("name", ["", "has space", "../evil", "/abs/path", "a/b", "a\\b", "nul\x00byte", ".hidden",
                                  "x" * 65, "a..b"])
def test_bad_names_are_refused_with_the_rule(name):
    with pytest.raises(ValueError, match="letters, digits"):
        files.check_name(name, "Token name")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.safetensors"

    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(str(target), boom)
    assert os.listdir(tmp_path) == []


def test_safetensors_round_trip_with_metadata(tmp_path):
    p = files.save_safetensors({"a": torch.arange(3.0)}, str(tmp_path / "x.safetensors"), {"step": 3})
    t, meta = files.load_safetensors(p)
    assert torch.equal(t["a"], torch.arange(3.0)) and meta["step"] == "3"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask      # not mkstemp's 0600


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ValueError, match="refused"):
        files.load_torch_weights(str(path))
    assert not marker.exists()


def test_embedding_layouts():
    one = formats.embedding_tensors({"clip_l": torch.zeros(2, 768)})
    assert list(one) == ["emb_params"] and one["emb_params"].shape == (2, 768)
    two = formats.embedding_tensors({"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)})
    assert set(two) == {"clip_l", "clip_g"}


def test_embedding_never_overwrites_a_foreign_file(tmp_path):
    path = str(tmp_path / "tok.safetensors")
    files.save_safetensors({"emb_params": torch.zeros(1, 4)}, path)
    with pytest.raises(ValueError, match="not made by this TextTune token"):
        formats.save_embedding(path, {"clip_l": torch.ones(1, 4)}, {"token": "tok"})
    formats.save_embedding(str(tmp_path / "new.safetensors"), {"clip_l": torch.ones(1, 4)}, {"token": "new"})
    formats.save_embedding(str(tmp_path / "new.safetensors"), {"clip_l": torch.ones(1, 4) * 2}, {"token": "new"})


def test_templates():
    assert len(templates.resolve("object")) == 27
    assert all(t.count("{}") == 1 for t in templates.resolve("style"))
    assert templates.resolve("custom", "a {} here\n\n b {}") == ["a {} here", "b {}"]
    with pytest.raises(ValueError, match="empty"):
        templates.resolve("custom", "  ")
    with pytest.raises(ValueError, match="exactly one"):
        templates.resolve("custom", "no placeholder")
