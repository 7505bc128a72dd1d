"""The Examples sections of the core modules run as doctests (real tagger), so the docs stay true."""

import doctest

import pytest

import attribution.datasets
import attribution.estimator
import attribution.features
import attribution.normalize


@pytest.mark.parametrize("module", [attribution.normalize, attribution.features, attribution.estimator,
                                    attribution.datasets],
                         ids=lambda m: m.__name__)
def test_examples_in_docstrings_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
