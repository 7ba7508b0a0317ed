"""The web console (管理后台) at /console/: sessions, CSRF, templates, and the pages (docs/console.md)."""
