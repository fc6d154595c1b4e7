"""DICOMweb (PS3.18): QIDO-RS, WADO-RS with progressive frames, STOW-RS, over ASGI (Starlette, uvicorn).

Resources (all under the service root; `pacs-engine serve --http-port N` mounts it at /):
  GET  /studies  /series  /instances  /studies/{s}/series  /studies/{s}/instances
       /studies/{s}/series/{se}/instances                         QIDO-RS search (engine.index.find)
  GET  /studies/{s}  /studies/{s}/series/{se}  .../instances/{sop} instances, multipart application/dicom
  GET  /studies/{s}/metadata  .../series/{se}/metadata  .../instances/{sop}/metadata   DICOM JSON
  GET  .../instances/{sop}/frames/{n,m}[?level=k]   frames; Range on one frame (see engine.web._frames)
  GET  /studies/{s}/series/{se}/frames?level=k[&frame=n]   one frame of every instance at level k
  GET  .../instances/{sop}/bulkdata/{tag path}       bulk data (BulkDataURI of the metadata)
  GET  .../rendered  .../thumbnail  (instance, frame; thumbnail also series and study)   JPEG / PNG
  POST /studies  /studies/{s}                        STOW-RS
"""

from __future__ import annotations

from engine.web._app import EXPOSED_HEADERS, create_app
from engine.web._errors import HTTP_STATUS_TABLE, HttpError, HttpStatus, http_status
from engine.web._server import WebServer

__all__ = ["EXPOSED_HEADERS", "HTTP_STATUS_TABLE", "HttpError", "HttpStatus", "WebServer", "create_app", "http_status"]
