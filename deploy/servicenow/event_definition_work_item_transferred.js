/*
 * External Event Definition (awa_external_event_definition), event type: work item
 * transferred, provider: the bridge's provider record. current is the new work item of the
 * transfer (its previous_work_item names the one it replaces).
 */
(function buildPayload(current, queueObj, documentGR, additionalParams) {
    return new BridgeAwaEvent().payload('awa_work_item.transferred', current);
})(current, queueObj, documentGR, additionalParams);
