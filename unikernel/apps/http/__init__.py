"""An HTTP/1.1 server, sans-IO: requests, responses, and the engine that frames them."""
