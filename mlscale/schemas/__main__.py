"""``python -m mlscale.schemas``: print plan.json's JSON Schema (docs/plan.schema.json).

Regenerate the published copy with ``python -m mlscale.schemas > docs/plan.schema.json``;
tests/schemas/test_schemas.py checks that the two are the same."""

from mlscale.schemas.plan import plan_json_schema_text

print(plan_json_schema_text(), end="")
