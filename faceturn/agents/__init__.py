"""The live listener inside voice-agent frameworks: a worker thread that runs it off the framework's event loop and
the turn decision both integrations share (`core`), and thin adapters for Pipecat (`pipecat`: a user-turn stop
strategy and a barge-in start strategy) and LiveKit Agents (`livekit`: a streaming turn detector). The adapters import
their framework at module level (they subclass its classes): import them by name, `faceturn` itself never does
(import-linter's "frameworks stay optional" contract)."""
