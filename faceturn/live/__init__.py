"""Live turn-yield prediction: a streaming listener fed raw audio and camera frames (`listener`), the session
recorder that turns a live session into a corpus conversation and its predictions (`record`), and the local web app
of `faceturn live` (`server`). The offline parts (Mimi, the face landmarker, Silero, `TurnYieldStream`) are reused,
not re-implemented: on the same media the listener's codes, faces and P(yield) equal `prepare` + `predict`.
"""
