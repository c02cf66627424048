"""The Vertex echo re-serialised as Google's sample output shows it."""

from __future__ import annotations

from batchflow.emulator.vertex.echo import echo


def test_the_echo_matches_googles_sample_nulls_sorted_keys_names_as_sent() -> None:
    sent = {"contents": [{"role": "user", "parts": [
        {"text": "List objects in this image."},
        {"file_data": {"file_uri": "gs://b/tools.jpeg", "mime_type": "image/jpeg"}}]}],
        "generationConfig": {"temperature": 0.4}, "labels": {"k": "v"}}
    assert echo(sent, reserialise=True, drop_labels=True) == {
        "contents": [{"parts": [{"file_data": None, "text": "List objects in this image."},
                                {"file_data": {"file_uri": "gs://b/tools.jpeg", "mime_type": "image/jpeg"},
                                 "text": None}], "role": "user"}],
        "generationConfig": {"temperature": 0.4}}
    assert sent["contents"][0]["parts"][0] == {"text": "List objects in this image."}, "the request is left alone"
    assert echo(sent, reserialise=False, drop_labels=False) == sent


def test_a_camel_case_part_gets_no_snake_case_twin() -> None:
    sent = {"systemInstruction": {"parts": [{"fileData": {"fileUri": "gs://b/x"}}]}, "contents": []}
    assert echo(sent, reserialise=True, drop_labels=False)["systemInstruction"] == {
        "parts": [{"fileData": {"fileUri": "gs://b/x"}, "text": None}]}
