"""The family registry: every named family provides the contract of tbcm.models.family."""

import pytest

from tbcm.errors import UserError
from tbcm.models.family import Family
from tbcm.models.registry import FAMILIES, family_of_pipeline, get_family


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_registered_family_provides_the_contract(name):
    family = get_family(name)
    assert isinstance(family, Family) and family.name == name
    assert callable(family.load_folder) and callable(family.write_folder)
    assert (family.load_pipeline is None) == (not family.pipeline_prefixes)  # a pipeline family names its pipelines
    assert family.export is not None or family.no_export  # either an export, or a sentence saying why not
    assert family.pixel_space or family.blank_latent is not None  # the degenerate filter has a reference


def test_unknown_family_and_pipeline_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model family 'nope': known families are tbcm") as info:
        get_family("nope")
    assert "\n" not in str(info.value)
    (tmp_path / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(UserError, match="KandinskyPipeline pipeline; tbcm distills sana, flux") as info:
        family_of_pipeline(tmp_path)
    assert "\n" not in str(info.value)
