{{/*
FastAPI's env entries: S3 credentials (MinIO), Redis password and URL, extra
plain values. Empty when none applies.
*/}}
{{- define "coelho-realtime.fastapi.env" -}}
{{- if .Values.minio.enabled }}
# S3 credentials for MLflow artifacts and the Delta lakehouse.
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.minio }}
      key: root-user
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.minio }}
      key: root-password
{{- end }}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.redis }}
      key: redis-password
# $(REDIS_PASSWORD) is expanded by the kubelet; the URL never sits in a ConfigMap.
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%v/0" (tpl .Values.connections.redisHost .) .Values.connections.redisPort | quote }}
{{- end }}
{{- with .Values.fastapi.env }}
{{- include "coelho-realtime.extraEnv" . }}
{{- end }}
{{- end }}
