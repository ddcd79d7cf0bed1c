"""Request and response bodies of the REST API (pydantic), one family per resource."""
