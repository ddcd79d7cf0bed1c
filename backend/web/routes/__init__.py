"""HTML routes (pages and htmx partials), one module per resource."""
