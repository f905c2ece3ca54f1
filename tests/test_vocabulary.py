import pytest

from clipzss_d2.vocabulary import VocabularyError, display_name, parse_vocabulary, split_synonyms


def test_parse_comma_separated_with_synonyms_and_spaces():
    assert parse_vocabulary(" cat, sofa | couch ,tv") == ["cat", "sofa|couch", "tv"]
    assert split_synonyms("sofa|couch") == ["sofa", "couch"]
    assert display_name("sofa|couch") == "sofa"


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "blank"),
        ("cat,,dog", "item 2 is blank"),
        ("cat, |", "blank"),
        ([], "empty"),
        ("cat,Cat", "appears twice"),
        ("sofa|couch,sofa", "appears twice"),
    ],
)
def test_bad_vocabularies_are_explained(spec, match):
    with pytest.raises(VocabularyError, match=match):
        parse_vocabulary(spec)


def test_large_vocabulary():
    names = [f"class {i}" for i in range(1000)]
    assert parse_vocabulary(",".join(names)) == names
