import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { configureClient } from './api/client'
import { createAppRouter } from './router'
import { useAuthStore } from './stores/auth'
import { useLocaleStore } from './stores/locale'
import { useTaskStore } from './stores/task'
import { translate } from './i18n'
import { notify } from './ui/notify'
import './styles.css'

const app = createApp(App)
const pinia = createPinia()
app.use(pinia)
const router = createAppRouter()

const auth = useAuthStore()
const locale = useLocaleStore()

let sessionEndedShown = false
configureClient({
  getToken: () => auth.key,
  getLanguage: () => locale.lang,
  onUnauthorized: () => {
    const wasLoggedIn = auth.isAuthenticated
    auth.logout()
    useTaskStore().stop()
    if (wasLoggedIn && !sessionEndedShown) {
      sessionEndedShown = true
      notify.warning(translate(locale.lang, 'auth.sessionEnded'))
      setTimeout(() => (sessionEndedShown = false), 2000)
    }
    if (router.currentRoute.value.name !== 'login') void router.push({ name: 'login' })
  },
  onError: (e) => {
    // The 401 is reported once by onUnauthorized.
    if (e.status !== 401) notify.error(e.message)
  },
  onSuccess: (message) => notify.success(message),
})

app.use(router)
app.mount('#app')
