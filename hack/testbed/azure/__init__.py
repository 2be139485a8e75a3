"""The test bed's Azure: an emulator of the Azure surface the failback operator uses.

One aiohttp process serves, over HTTPS with a certificate of the test bed's CA, the
identity platform, the Azure Resource Manager compute subset and the page-blob API
behind disk SAS URLs, so the *real* SDK clients run against it unchanged::

    PYTHONPATH=hack python -m testbed.azure --host 127.0.0.1 --port PORT \\
        --cert F --key F [--time-scale X] [--client-secret-file F]

``testbed.azure.process`` starts it (``start_azure_emulator`` for tests,
``launch_azure_emulator`` detached for ``python -m testbed up``) and returns an
``AzureEmulator`` handle: ``endpoint``, ``arm_url``, ``authority``, ``tenant_id``,
``client_id``, ``client_secret`` (read from ``client_secret_file``, 0600),
``subscription_id``, ``ca_file``, ``pid``, ``log_file``, ``control`` (a client of the
control API), ``credential_kwargs()``/``arm_client_kwargs()``, and
``to_dict``/``from_dict``/``save``/``load`` for the state file::

    cred = ClientSecretCredential(h.tenant_id, h.client_id, h.client_secret,
                                  **h.credential_kwargs())   # authority, no instance
                                                             # discovery, CA bundle
    compute = ComputeManagementClient(cred, h.subscription_id, **h.arm_client_kwargs())
    disk = BlobClient.from_blob_url(sas_url, connection_verify=str(h.ca_file))

Emulated
========

Identity (``identity``)
    ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (what MSAL reads) and
    ``POST /{tenant}/oauth2/v2.0/token`` with ``client_credentials`` for the one test bed
    principal (``principal``). A wrong secret is 401 ``invalid_client`` AADSTS7000215, an
    unknown client 400 AADSTS700016, an unknown tenant 400 AADSTS90002. A client assertion
    (``client_assertion``, a JWT) signed by a certificate or a federated credential
    registered through the control API (``assertions``) signs the principal in too, as a
    certificate credential or workload identity does; a bad one is 401 AADSTS700027.
    Tokens are opaque random strings remembered with principal, audience and expiry (1 h
    emulated).

ARM compute (``arm``, ``vms``, ``disks``, ``armcore``)
    Under ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute``:
    ``virtualMachines`` get (``$expand=instanceView``), createOrUpdate, delete, list,
    ``instanceView``, ``powerOff``, ``deallocate``, ``start``, ``restart``; ``disks`` get,
    createOrUpdate (``Empty``, ``Upload``, ``Copy``), delete, list, ``beginGetAccess``
    (Read, or Write for uploads and, unlike Azure, for any unattached disk: the replica disk
    of reverse replication, see docs/sink-azure.md), ``endGetAccess``; ``snapshots`` get,
    createOrUpdate (``Copy`` of a disk, incremental or full, or ``CopyStart`` of an
    incremental snapshot; tags kept and listed), delete, list, ``beginGetAccess``,
    ``endGetAccess``; subscription-wide lists. Bodies have ARM's shape (ids,
    ``provisioningState``, ``diskState``
    Unattached/Attached/Reserved/ActiveSAS/ReadyToUpload/ActiveUpload, sizes,
    ``timeCreated``, ``managedBy``, incremental snapshot family, instance view statuses
    ``ProvisioningState/*`` and
    ``PowerState/running|stopped|deallocated|starting|stopping|deallocating``). Errors are
    ``{"error": {"code", "message"}}``: 404
    ``ResourceNotFound``/``ResourceGroupNotFound``/``SubscriptionNotFound``, 409
    ``OperationNotAllowed`` (delete an attached or exported disk, export a disk whose VM is
    not deallocated, power off a deallocated VM, ...), DELETE of a missing resource is 204.
    Every write is a long-running operation (see ``armcore``): 201/202 with
    ``Azure-AsyncOperation``, ``Location`` and ``Retry-After``; it completes after its
    emulated duration (``Limits.durations``); power states change then, and a newer power
    action preempts a running one (``OperationPreempted``). A continuation token resumes the
    same operation from a new client without a second write.

Page blobs behind SAS URLs (``blob``, ``sas``, ``pages``)
    ``https://127.0.0.1:PORT/md-<id>/<container>/abcd?sv&sr=b&si&sp=r|rw&se&sig``: HEAD,
    ranged GET, Put Page (update of at most 4 MiB, clear of any length; write SAS only), Get
    Page Ranges and, between two incremental snapshots of one disk, the diff
    (``x-ms-previous-snapshot-url``) with ``PageRange`` and ``ClearRange``,
    ``marker``/``maxresults`` paging (10,000 at most per answer). Content is sparse per
    512-byte page; every write gives a page a new generation, so a diff lists pages
    *written* since the older snapshot even if the bytes are equal, and pages present then
    but cleared now. Note: the SDK's ``get_page_range_diff_for_managed_disk`` sends one
    request and drops ``NextMarker`` (10,000 ranges at most); follow the marker yourself
    (see the tests' ``diff_pages``).

Limits (``limits``; all can change at run time)
    7 incremental snapshots per disk per 5 min (429 ``SnapshotOperationRateExceeded``
    + ``Retry-After`` + ``x-ms-ratelimit-remaining-resource``), 500 per disk (409
    ``SnapshotCountExceeded``), 5 live SAS per snapshot family (409
    ``OperationNotAllowed``), ARM writes 1,200/h and reads 12,000/h per principal and
    subscription as token buckets (429 ``SubscriptionRequestsThrottled`` +
    ``Retry-After``; every answer has ``x-ms-ratelimit-remaining-subscription-writes``
    or ``-reads``).

Time (``clock``)
    All emulator time is emulated: real time times ``--time-scale`` (60: a real second is an
    emulated minute), and tests may jump it ahead. ``Retry-After`` and a token's
    ``expires_in`` are converted back to real seconds (``Retry-After`` is whole seconds,
    at least 1, unless ``poll_retry_after`` fixes it; 0 makes the SDK use its own
    ``polling_interval``).

Network interfaces (``vms``)
    A VM created with ``networkProfile.networkInterfaceConfigurations`` gets one NIC per
    configuration (``Microsoft.Network/networkInterfaces``, GET only), deleted with it when
    its ``deleteOption`` says so; its private address is on the loopback network, where
    the test bed runs everything: ``127.0.0.4``, ``.5``, ... in creation order after a reset.

Not emulated: other resource types and providers (other networking, images, restore points,
resource groups over ARM), PATCH updates, VM extensions and run commands, scale sets,
availability zones, ``prevsnapshot`` (blob-snapshot diffs), Put Blob and other blob
operations, storage account keys or user delegation SAS, managed identities, other
grant types, instance discovery, throttling of blob requests (inject faults instead).

Control API (``control``, ``control_client``): ``/_emulator/*``, JSON, loopback only,
no auth, never faulted or counted
==================================================================================

- ``GET health``; ``POST reset`` (everything back to defaults; the clock runs on);
- ``GET|PATCH clock`` (``time_scale``), ``POST clock/advance`` (``seconds``);
- ``GET|PATCH limits`` (any ``Limits`` field; ``durations`` merge);
- ``GET stats``, ``POST stats/reset``: requests by route class (``arm_write``,
  ``arm_read``, ``arm_poll``, ``token``, ``identity_discovery``, ``blob_read``,
  ``blob_write``) and method, ARM writes by operation, answers by status and route,
  ``throttled`` (429s sent), ``faults_injected``, operations started/succeeded/failed;
- ``GET events?since=SEQ&kind=PREFIX``: the history with emulated ``time``/``timestamp``
  and ``wall_time``: ``vm.created``, ``vm.power`` (``from``/``to``), ``vm.deleted``,
  ``disk.created``, ``disk.deleted``, ``disk.attached``, ``disk.detached``,
  ``snapshot.created``, ``snapshot.deleted``, ``access.granted``, ``access.revoked``;
- ``GET operations``: every long-running operation and its status;
- ``GET|POST|DELETE faults``, ``DELETE faults/{id}``: fault rules (see ``faults``):
  ``error`` (429/5xx with ``Retry-After``), ``hang``, ``close``, ``delay``,
  ``fail_operation``, ``corrupt`` (a Put Page stored with a flipped byte), ``times``
  times or ``for_seconds``;
- ``POST tokens/expire``: every issued token expires now;
- ``POST principal/credentials``: trust a certificate (``kind: certificate``, ``pem``) or a
  federated credential (``kind: federated``, ``pem`` of the issuer's public key,
  ``issuer``, ``subject``) for client assertions;
- ``POST resource-groups``, ``POST disks`` (``size_bytes``), ``POST vms`` (OS and data
  disks, ``power_state``), ``POST vms/{rg}/{vm}/power`` (out-of-band power change);
- ``POST disks/{rg}/{disk}/writes``: guest writes (``data``/``fill``/``clear``), refused
  unless the disk's VM is running (``require_running``);
- ``GET disks/{rg}/{disk}/content``, ``GET snapshots/{rg}/{snap}/content``
  (``offset``, ``length``): raw bytes for assertions.

Logs name method, path and status only: never a query string (SAS signatures), a
header or a body (tokens, secrets).
"""
