"""The media repository's machinery below the handlers: files on disk
(`storage`), thumbnails with Pillow (`thumbnailer`), how content is served
(`serving`) and URL previews (`preview`). No database access here; the
handler (`myelin.handlers.media`) ties it to the stores."""
