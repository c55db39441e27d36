"""The base of every config model: unknown keys are errors, values are validated on assignment."""

from pydantic import BaseModel, ConfigDict

PATH = {"path": True}
"""``json_schema_extra`` of every field that holds a file-system path (or a URI with one): such values
are redacted wherever a config leaves the machine (MLflow params and ``config.yaml``), because
hospital folder names often carry patient names."""


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
