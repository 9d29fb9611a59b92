/*
 * External Event Definition (awa_external_event_definition), event type: work item created,
 * provider: the bridge's provider record. AWA runs it with current (the awa_work_item),
 * queueObj, documentGR and additionalParams; the returned string is the request body.
 */
(function buildPayload(current, queueObj, documentGR, additionalParams) {
    return new BridgeAwaEvent().payload('awa_work_item.created', current);
})(current, queueObj, documentGR, additionalParams);
