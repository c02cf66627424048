"""What the emulator says and checks on the wire: errors in Google's REST shape, request checks with the real
API's verdicts, and lines parsed the way Google's proto-JSON parser reads them (``google_schemas.json``)."""
