"""The pure core: state machines, preflight rules, recovery-point choice, RPO math.

No I/O and no clock: everything it needs comes in as arguments (import-linter
forbids kopf, kubernetes, pyVmomi, azure, aiohttp, asyncio here).
"""
