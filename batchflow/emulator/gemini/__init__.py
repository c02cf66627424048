"""The Gemini Developer API's surface: the Files API's storage (``files``), create bodies read (``submit``) and a
batch's lines run through the model (``execute``)."""
